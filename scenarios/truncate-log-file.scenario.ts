/**
 * `--logfile !PATH` truncates: the file the client opens with O_TRUNC holds
 * only what the command logs after the redirect; a redirect on a live
 * connection replaces the command's log fd. In-process and through the CLI.
 */
import { strict as assert } from 'node:assert';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { LOG_COMMAND, logRedirectOption } from '../src';
import type { Scenario } from '../harness/types';
import { cliTransportArgs, runCli } from './support/common';

const scenario: Scenario = {
  name: 'truncate-log-file',
  description: '`--logfile !PATH` truncates the file first, also when it replaces a redirect on a live connection',
  tags: ['log'],
  async run(ctx) {
    const file = join(ctx.tmpdir, 'fresh.log');
    writeFileSync(file, 'old contents that must go\n'.repeat(ctx.rng.int(1, 5)));
    const conn = await ctx.connect(LOG_COMMAND);
    try {
      await logRedirectOption(conn, `!${file}`);
      await conn.call('log', 'first');
      assert.equal(readFileSync(file, 'utf8'), 'first\n');
      // Append first, then truncate again through a new redirect.
      await logRedirectOption(conn, file);
      await conn.call('log', 'second');
      assert.equal(readFileSync(file, 'utf8'), 'first\nsecond\n');
      await logRedirectOption(conn, `!${file}`);
      await conn.call('log', 'third');
      assert.equal(readFileSync(file, 'utf8'), 'third\n');
    } finally {
      await conn.close();
    }
    const cwd = join(ctx.tmpdir, 'cwd');
    mkdirSync(cwd);
    writeFileSync(join(cwd, 'rel.log'), 'stale\n');
    const r = await runCli(['log', ...(await cliTransportArgs(ctx)), '--logfile', '!rel.log', 'fresh'], { cwd });
    assert.equal(r.code, 0, `exit status (stderr: ${r.stderr})`);
    assert.equal(readFileSync(join(cwd, 'rel.log'), 'utf8'), 'fresh\n');
    assert.equal(existsSync(join(cwd, '!rel.log')), false, 'the ! is not part of the name');
  },
};

export default scenario;
