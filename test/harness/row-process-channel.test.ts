/**
 * A scenario that closes its row process's channel to the run (fd 3, the
 * 'ipc' of the row process's stdio; test/fixtures/row-process-scenarios/
 * closes-channel) fails at once, with that reason and the fd it closed,
 * not after its time limit as a row whose thread never returned; the rows
 * after it run in a new row process.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { resultRow as row, runRowProcessScenarios } from '../util/row-process-runs';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-row-process-channel-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('a scenario that closes the row process\'s channel (fd 3) fails with that reason and the closed fd, not a time-out; the other row passes', async () => {
  const rs = await runRowProcessScenarios(dir, ['--timeout', '5000', '--scenario', 'closes-channel,passes']);
  const closes = row(rs, 'closes-channel');
  expect(closes).toMatchObject({
    status: 'fail',
    leaks: [],
    // The freed number may already hold what the row process opened next (its own fd table's listing, read once
    // the scenario returns): reported as what fd 3 names now. Either way the reason is the scenario's close.
    error: expect.stringMatching(/^the scenario closed the harness's channel \(fd 3 -> socket:\[\d+\]\): fd 3 (?:is closed in the row process|names \S+ in the row process now);/),
    closed: [{ role: 'client', fd: 3, target: expect.stringMatching(/^socket:\[\d+\]$/) }],
    rowProcess: { ended: 'channel-closed' },
  });
  expect(closes.error).not.toContain('timed out');
  expect(row(rs, 'passes')).toMatchObject({ status: 'pass' });
});
