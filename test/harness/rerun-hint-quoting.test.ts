/**
 * `fdbridge run` ends, when rows failed, with the commands that rerun
 * them (`--scenario-name NAME`). A scenario's name is free text: the command
 * printed must give the shell that name as one word, whatever it holds. A
 * name with a single quote broke out of the quotes it was put in as it
 * was: `a'b&c` made `--scenario 'a'b&c'`, which a shell reads as `ab`, a
 * background job, and a command `c'`.
 *
 * Generated: names of printable characters rich in what a shell reads
 * (quotes, `$`, `;`, `&`, `|`, backquotes, spaces, backslashes); the
 * printed line's words, as `sh` splits them, must hold the name after
 * `--scenario-name`.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { runCli, writeFailingScenario } from '../util/processes';
import { scaled } from '../util/time-scale';

const NAME_CHARS = ["'", '"', '$', ';', '&', '|', '`', ' ', '\\', '*', '(', ')', '!', '#', 'a', 'b', '-', '$(id)', "'\\''"];

/** The words `sh` makes of `line` (nothing run: each word printed by printf). */
function shellWords(line: string): string[] {
  const out = execFileSync('sh', ['-c', `printf '%s\\0' ${line}`], { encoding: 'utf8' });
  return out.split('\0').slice(0, -1);
}

test('generated scenario names: the rerun command printed for a failed row gives the shell the name as one word', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdb-rerun-hint-'));
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.constantFrom(...NAME_CHARS), { minLength: 1, maxLength: 12 }).map((parts) => parts.join('')), async (name) => {
        const scenarios = writeFailingScenario(dir, name);
        const r = await runCli(['run', '--transport', 'direct', '--settle', '50'], { env: { FDBRIDGE_SCENARIOS_DIR: scenarios } });
        expect(r.code).toBe(1);
        const hint = r.stdout.split('to rerun a failed row:\n')[1]?.split('\n')[0] ?? '';
        const words = shellWords(hint.replace(/^ {2}node \S+ run /, ''));
        // A name that starts with " or starts or ends with a space is given as the output shows it (harness/summary.ts terminalName): a JSON string.
        const given = /^["\s]|\s$/.test(name) ? JSON.stringify(name) : name;
        expect(words).toEqual(['--seed', '1', '--scenario-name', given, '--transport', 'direct', '--settle', '50']);
      }),
      { numRuns: 10, endOnFailure: true, examples: [["a'b&c"]] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, scaled(120_000));
