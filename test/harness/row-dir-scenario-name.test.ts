/**
 * A scenario's name is free text (it is escaped wherever a report shows
 * it), and a row's temporary directory is named after it
 * (`$TMPDIR/fdbridge-<scenario>-<pid>-XXXXXX`). Whatever the name, the
 * directory is made in $TMPDIR and nowhere else, the row runs, and nothing
 * is left behind: a `/` in the name put the directory elsewhere
 * (`../x` climbs out of $TMPDIR) or ended the whole run with ENOENT before
 * its first row (a directory that does not exist), and a NUL ended it with
 * mkdtemp's ERR_INVALID_ARG_VALUE.
 *
 * Generated: names of up to 50 characters from a set rich in `/`, `.`,
 * NUL, newlines and other characters a file name should not hold.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';

import fc from 'fast-check';

import { runCli } from '../util/processes';
import { scaled } from '../util/time-scale';

const NAME_CHARS = ['/', '.', '..', '\u0000', '\n', ' ', '*', '~', '-', 'a', 'Z', '9', 'é', '\u001b[31m', '"', '$'];

test('generated scenario names: the row directory is made in $TMPDIR, the row passes, nothing is left', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.constantFrom(...NAME_CHARS), { minLength: 1, maxLength: 25 }).map((parts) => parts.join('').slice(0, 50)),
      async (name) => {
        const dir = mkdtempSync(join(tmpdir(), 'fdb-row-dir-name-'));
        try {
          const tmp = join(dir, 'a', 'b', 'tmp');
          mkdirSync(tmp, { recursive: true });
          const scenarios = join(dir, 'scenarios');
          mkdirSync(scenarios);
          const seen = join(dir, 'seen.json');
          writeFileSync(
            join(scenarios, 'named.scenario.js'),
            `module.exports = { name: ${JSON.stringify(name)}, description: 'x', transports: ['direct'], run(ctx) {
  require('node:fs').writeFileSync(${JSON.stringify(seen)}, JSON.stringify(ctx.tmpdir));
} };\n`,
          );
          const r = await runCli(['run', '--transport', 'direct', '--settle', '50'], { env: { TMPDIR: tmp, FDBRIDGE_SCENARIOS_DIR: scenarios } });
          expect({ code: r.code, out: r.stdout, err: r.stderr }).toEqual({ code: 0, out: expect.stringContaining('1 pass'), err: expect.anything() });
          const rowDir = JSON.parse(readFileSync(seen, 'utf8')) as string;
          expect(dirname(rowDir)).toBe(tmp);
          expect(basename(rowDir)).toMatch(/^fdbridge-[A-Za-z0-9._-]*-\d+-[A-Za-z0-9]{6}$/);
          // Nothing made beside $TMPDIR or above it, nothing left in it.
          expect(readdirSync(tmp)).toEqual([]);
          expect(readdirSync(join(dir, 'a', 'b'))).toEqual(['tmp']);
          expect(readdirSync(join(dir, 'a'))).toEqual(['b']);
          expect(readdirSync(dir).sort()).toEqual(['a', 'scenarios', 'seen.json']);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    ),
    { numRuns: 10, endOnFailure: true, examples: [['../x'], ['a\u0000b']] },
  );
}, scaled(120_000));
