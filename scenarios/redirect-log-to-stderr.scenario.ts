/**
 * `fdbridge log --logfile -stderr`, end to end in a subprocess with captured
 * stdio: the log goes to the client's stderr, and no file named "-stderr" is
 * created (a parser lacking an `else` falls through and opens one: see
 * reproduce-seed-stderr-fallthrough).
 */
import { strict as assert } from 'node:assert';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import type { Scenario } from '../harness/types';
import { cliTransportArgs, runCli } from './support/common';

const scenario: Scenario = {
  name: 'redirect-log-to-stderr',
  description: "`--logfile -stderr` sends the command's log to the client's stderr and creates no file named -stderr",
  tags: ['log'],
  async run(ctx) {
    const transportArgs = await cliTransportArgs(ctx);
    const cwd = join(ctx.tmpdir, 'cwd');
    mkdirSync(cwd);
    const lines = Array.from({ length: ctx.rng.int(1, 3) }, (_, i) => `stderr line ${i} ${ctx.rng.int(0, 1e6)}`);
    const r = await runCli(['log', ...transportArgs, '--logfile', '-stderr', ...lines], { cwd });
    assert.equal(r.code, 0, `exit status (stderr: ${r.stderr})`);
    assert.equal(r.stderr, lines.map((l) => `${l}\n`).join(''));
    assert.equal(r.stdout, '');
    assert.equal(existsSync(join(cwd, '-stderr')), false, 'no file named -stderr');
    assert.deepEqual(readdirSync(cwd), []);
  },
};

export default scenario;
