/**
 * `fdbridge log --logfile -` and `--logfile -stdout`, end to end in a
 * subprocess with captured stdio: the client duplicates its stdout into the
 * command's context and the command's log lines come out there. No file is
 * created.
 */
import { strict as assert } from 'node:assert';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import type { Scenario } from '../harness/types';
import { cliTransportArgs, runCli } from './support/common';

const scenario: Scenario = {
  name: 'redirect-log-to-stdout',
  description: "`--logfile -` and `--logfile -stdout` send the command's log to the client's stdout, wherever the command runs",
  tags: ['log'],
  async run(ctx) {
    const transportArgs = await cliTransportArgs(ctx);
    const cwd = join(ctx.tmpdir, 'cwd');
    mkdirSync(cwd);
    for (const form of ['-', '-stdout']) {
      const lines = Array.from({ length: ctx.rng.int(1, 3) }, (_, i) => `stdout line ${i} (${form}) ${ctx.rng.int(0, 1e6)}`);
      const r = await runCli(['log', ...transportArgs, '--logfile', form, ...lines], { cwd });
      assert.equal(r.code, 0, `exit status (stderr: ${r.stderr})`);
      assert.equal(r.stdout, lines.map((l) => `${l}\n`).join(''));
      assert.equal(r.stderr, '');
      assert.deepEqual(readdirSync(cwd), [], `--logfile ${form} created no file`);
    }
  },
};

export default scenario;
