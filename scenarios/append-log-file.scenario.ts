/**
 * `--logfile PATH` appends: the client opens the file (O_APPEND), duplicates
 * it into the command's context, closes its own copy, and the command's log
 * lines land after what was there, across connections and redirects. Run
 * in-process through logRedirectOption (the leak oracle watches it) and once
 * through the CLI with a path relative to its cwd.
 */
import { strict as assert } from 'node:assert';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { LOG_COMMAND, logRedirectOption } from '../src';
import type { Scenario } from '../harness/types';
import { cliTransportArgs, runCli } from './support/common';

const scenario: Scenario = {
  name: 'append-log-file',
  description: '`--logfile PATH` appends the command\'s log to the file the client opened, across connections and redirects',
  tags: ['log'],
  async run(ctx) {
    const file = join(ctx.tmpdir, 'app.log');
    let expected = `existing ${ctx.rng.int(0, 1e6)}\n`;
    writeFileSync(file, expected);
    for (let round = 0; round < 2; round++) {
      const conn = await ctx.connect(LOG_COMMAND);
      try {
        // Redirecting twice: the command swaps (and closes) the fd it had.
        for (let redirect = 0; redirect < 2; redirect++) {
          await logRedirectOption(conn, file);
          const line = `round ${round} redirect ${redirect} ${ctx.rng.int(0, 1e6)}`;
          await conn.call('log', line);
          expected += `${line}\n`;
          assert.equal(readFileSync(file, 'utf8'), expected);
        }
      } finally {
        await conn.close();
      }
    }
    // The CLI, end to end, with a path relative to its cwd.
    const cwd = join(ctx.tmpdir, 'cwd');
    mkdirSync(cwd);
    writeFileSync(join(cwd, 'rel.log'), 'before\n');
    const r = await runCli(['log', ...(await cliTransportArgs(ctx)), '--logfile', 'rel.log', 'one', 'two'], { cwd });
    assert.equal(r.code, 0, `exit status (stderr: ${r.stderr})`);
    assert.equal(r.stdout + r.stderr, '');
    assert.equal(readFileSync(join(cwd, 'rel.log'), 'utf8'), 'before\none\ntwo\n');
  },
};

export default scenario;
