/**
 * A reader that stops reading the CLI's stdout (`fdbridge run --list |
 * head -1`) ends the CLI quietly: no `write EPIPE` stack on stderr, exit
 * status 0, whichever subcommand was writing. Here the read end is closed
 * before the CLI starts, so its first write to stdout fails EPIPE.
 */
import { spawn } from 'node:child_process';
import { closeSync } from 'node:fs';

import fc from 'fast-check';

import { makePipe, openFdTable } from '../../src/fd';
import { distPath } from '../../src/paths';
import { FIXTURE_SCENARIOS } from '../util/processes';
import { scaled } from '../util/time-scale';

jest.setTimeout(scaled(300_000));

/** Subcommands' words that write to stdout (and do no other work). */
const WRITERS: readonly (readonly string[])[] = [
  ['run', '--list'],
  ['run', '--help'],
  ['--help'],
  ['help', 'compare'],
  ['--version'],
  ['compare', '--help'],
  ['merge', '--help'],
  ['bench', '--help'],
  ['helper', '--help'],
  ['log', '--help'],
];

/** Runs the CLI with `args`, its stdout a pipe whose read end is already closed. */
function withClosedStdout(args: readonly string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const [r, w] = makePipe();
  closeSync(r);
  try {
    const child = spawn(process.execPath, [distPath('harness/cli.js'), ...args], {
      stdio: ['ignore', w, 'pipe'],
      env: { ...process.env, FDBRIDGE_SCENARIOS_DIR: FIXTURE_SCENARIOS },
    });
    const errors = child.stderr;
    if (errors === null) throw new Error('spawn gave no stderr pipe');
    let stderr = '';
    errors.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stderr })));
  } finally {
    closeSync(w);
  }
}

test('a closed stdout ends every subcommand quietly, exit 0', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...WRITERS), async (args) => {
      expect({ args, ...(await withClosedStdout(args)) }).toEqual({ args, code: 0, signal: null, stderr: '' });
    }),
    { numRuns: 12 },
  );
  expect(openFdTable()).toEqual(before);
});
