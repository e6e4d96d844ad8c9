/**
 * The native recorder (native/fdtrack/fdtrack.c) in a process that execs
 * an image it does not record: one started as another user (it cannot map
 * a file in the recorder's directory, root's, mode 0700), or without the
 * recorder. The file the old image wrote stays under the process's pid; a
 * file the new image opens at a number where the old one opened the same
 * file read as the old image's open. It must read as not tracked. An exec
 * that fails leaves the image, and its records, as they were.
 * Run on a C program (fixtures/execs-unrecorded.c).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openFdTable } from '../../src/fd';
import { fdOrigin, leakOrigin } from '../../src/fd-track';
import { isRoot } from '../util/nobody';
import { fdTableSettles } from '../util/processes';
import { runCUnderTracker } from '../util/tracked-c';

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-fdtrack-exec-'));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const itAsRoot = isRoot ? test : test.skip;

describe.each([
  { how: 'nobody', says: 'opened', origin: undefined, leak: 'untracked' },
  { how: 'unrecorded', says: 'opened', origin: undefined, leak: 'untracked' },
  { how: 'failing', says: 'failed', origin: 'open', leak: 'open' },
])('an exec ($how) after an open of /dev/null at the number the next image opens it at', ({ how, says, origin, leak }) => {
  itAsRoot(`the open there reads as ${leak}`, async () => {
    const before = openFdTable();
    const out = runCUnderTracker(dir, join(__dirname, 'fixtures', 'execs-unrecorded.c'), [how]).split('\n');
    const { pid, fd } = JSON.parse(out[0]!) as { pid: number; fd: number };
    expect(out[1]).toMatch(new RegExp(`^${says}`));
    expect(fdOrigin(dir, pid, fd, '/dev/null')?.call).toBe(origin);
    expect(leakOrigin(dir, pid, fd, '/dev/null').call).toBe(leak);
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});
