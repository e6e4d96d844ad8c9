/**
 * A terminal that closes (an ssh session dropped, a terminal window shut)
 * sends SIGHUP to the foreground process group: `fdbridge run` and its row
 * process. The run must clean up as it does on SIGINT and SIGTERM: no
 * temporary directory (the helper daemon's socket and log, the row's
 * directory) may be left in $TMPDIR, and no process it started may be left
 * running. The row here waits on its event loop (it does not block its
 * thread): everything can still answer. The test waits for the row to say
 * it began (a line on the run's stdout), signals the group, and waits for
 * the run's exit.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';
import { exitOf, MarkedRuns } from '../util/processes';

const runs = new MarkedRuns('FDBRIDGE_ATTACK_HANGUP');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-hangup-'));
  writeFileSync(
    join(dir, 'waits-on-helper.scenario.js'),
    `const { LOG_COMMAND } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'index.js'))});
module.exports = {
  name: 'waits-on-helper',
  description: 'holds a helper daemon connection and waits on its event loop',
  transports: ['helper'],
  async run(ctx) {
    const conn = await ctx.connect(LOG_COMMAND);
    process.stdout.write('ROW BEGAN\\n');
    try {
      await new Promise((resolve) => setTimeout(resolve, 600000));
    } finally {
      await conn.close();
    }
  },
};
`,
  );
});

afterAll(async () => {
  await runs.killAll();
  rmSync(dir, { recursive: true, force: true });
});

test('SIGHUP to the run\'s process group during a row leaves no temporary directory and no process behind', async () => {
  const tmp = join(dir, 'tmp');
  mkdirSync(tmp);
  // detached: its own process group, as a terminal's job is.
  const child = runs.start(['--scenarios', dir, '--timeout', '600000', '--settle', '100'], tmp, { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('ROW BEGAN\n')) resolve();
    });
    child.once('exit', () => reject(new Error(`the run exited before its row began: ${out}`)));
  });
  child.stdout!.resume();
  process.kill(-child.pid!, 'SIGHUP');
  await exitOf(child);
  expect({ left: readdirSync(tmp), running: runs.live().length }).toEqual({ left: [], running: 0 });
}, 120_000);
