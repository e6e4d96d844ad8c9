/**
 * A scenario's name is free text; `fdbridge run` prints it in its progress
 * lines, its matrix, `--list` and the rerun commands. Printed as it was, a
 * name holding a newline, an ANSI sequence (`\x1b[2K\r` erases the line),
 * a carriage return or a bidi override could forge a line (`clean-dup
 * pass`) or hide one. Names with characters a terminal does not show as
 * themselves are shown as JSON strings (terminalName); every other name as
 * it is.
 *
 * Generated: terminalName on any string (its output has no such
 * character, gives the name back, and is the name itself when the name
 * has none, is not empty, does not start with `"` and neither starts nor
 * ends with a space); and whole runs of a failing
 * scenario named from a set rich in controls, escapes, separators and
 * quotes: the output has no control character but newlines, the matrix
 * has one line for the scenario, and the printed rerun command, run by
 * `sh` with `--list`, selects that scenario.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';

import fc from 'fast-check';

import { terminalName } from '../../harness/summary';
import { runCli, writeFailingScenario } from '../util/processes';
import { scaled } from '../util/time-scale';

const UNSEEN = /[\p{C}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;

test('generated strings: terminalName shows no unseen character, gives the name back, and leaves a plain name as it is', () => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme-ascii' }), fc.stringMatching(/^[a-z][a-z0-9-]{0,30}$/)), (name) => {
      const shown = terminalName(name);
      expect(UNSEEN.test(shown)).toBe(false);
      if (!UNSEEN.test(name) && /^[^"\s](.*\S)?$/su.test(name)) expect(shown).toBe(name);
      else expect(JSON.parse(shown)).toBe(name);
    }),
    { numRuns: 2000 },
  );
});

const NAME_CHARS = ['a', 'b', '-', ' ', '\n', '\r', '\t', '\u001b[2K', '\u001b[32m', '\u0007', '\u007f', '\u0085', '\u2028', '\u202e', '\u00a0', '"', '\\', "'", 'clean-dup  direct  pass'];

test('generated scenario names: the run prints no control character, one matrix line per scenario, and a rerun command that selects it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fdb-terminal-names-'));
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.constantFrom(...NAME_CHARS), { minLength: 1, maxLength: 8 }).map((parts) => parts.join('')), async (name) => {
        const scenarios = writeFailingScenario(dir, name);
        const env = { FDBRIDGE_SCENARIOS_DIR: scenarios };
        const r = await runCli(['run', '--transport', 'direct', '--settle', '50'], { env, cwd: dir });
        expect(r.code).toBe(1);
        expect(/[\p{C}\p{Zl}\p{Zp}]/u.test(r.stdout.replace(/\n/g, ''))).toBe(false);
        const shown = terminalName(name);
        const matrix = r.stdout.split('\n').filter((l) => / {2,}(FAIL|pass)$/.test(l));
        expect(matrix).toHaveLength(1);
        expect(matrix[0]).toMatch(/^(.*?) +FAIL$/);
        expect(matrix[0]?.replace(/ +FAIL$/, '')).toBe(shown);
        const hint = (r.stdout.split('to rerun a failed row:\n')[1] ?? '').split('\n')[0]?.trim() ?? '';
        const listed = execFileSync('sh', ['-c', `${hint} --list`], {
          cwd: dir,
          encoding: 'utf8',
          env: { ...process.env, ...env, PATH: `${dirname(process.execPath)}${delimiter}${process.env['PATH'] ?? ''}` },
        });
        expect(listed).toBe(`${shown} direct\n`);
      }),
      { numRuns: 8, endOnFailure: true, examples: [['a\u001b[2K\rclean-dup  direct  pass\nb'], ['"b"'], ['a ']] },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, scaled(240_000));
