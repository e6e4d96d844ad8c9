/**
 * A log option parser that tests "-stderr", then, with no `else`, tests
 * "-"/"-stdout" and otherwise opens a file, as the seed's logRedirectOption
 * does (the seed: the backup tool's helper code fdbridge's design comes
 * from). So `--logfile -stderr` falls through and opens a file named
 * "-stderr" in the cwd, and the log goes there. A faithful port, run against
 * the real LogCommand on this transport: fdbridge duplicates the opened file
 * into the command, the command logs into it, and the check that the log line
 * did not land in a file named "-stderr" fails (the declared failure). A file
 * that exists without the line is a real failure. (fdbridge's own
 * logRedirectOption: redirect-log-to-stderr.)
 */
import { strict as assert } from 'node:assert';
import { closeSync, constants as fs, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { LOG_COMMAND, type Connection } from '../src';
import { CheckFailure } from '../harness/check';
import type { Scenario } from '../harness/types';

/**
 * The seed's -logRedirectOption:, line for line (DDPath realPath: resolves
 * against the cwd; here `cwd` stands in for it so the harness's own cwd is
 * never touched).
 */
async function seedLogRedirectOption(connection: Connection, argument: string, cwd: string): Promise<void> {
  let redirectFD: number;
  let newFile = false;
  if (argument === '-stderr') {
    // Redirect log output to stderr
    redirectFD = 2;
  }
  // (the missing `else`)
  if (argument === '-' || argument === '-stdout') {
    redirectFD = 1;
  } else {
    let flags = fs.O_WRONLY | fs.O_CREAT | fs.O_APPEND;
    if (argument.length > 1 && argument.startsWith('!')) {
      flags = fs.O_WRONLY | fs.O_CREAT | fs.O_TRUNC;
      argument = argument.slice(1);
    }
    // S_IRUSR|S_IWUSR|S_IRGRP|S_IWGRP|S_IROTH
    redirectFD = openSync(resolve(cwd, argument), flags, 0o664);
    newFile = true;
  }
  const dupFD = await connection.dupFileDescriptor(redirectFD);
  await connection.call('redirectLogToFd', dupFD);
  if (newFile) closeSync(redirectFD);
}

const scenario: Scenario = {
  name: 'reproduce-seed-stderr-fallthrough',
  description: 'a faithful port of the seed\'s logRedirectOption (no else): `--logfile -stderr` opens a file named "-stderr"; the check that it does not must fail',
  expect: 'fail',
  failure: { error: { name: 'CheckFailure', check: 'log-went-to-file-named-stderr' } },
  tags: ['seed-bug', 'log'],
  async run(ctx) {
    const cwd = join(ctx.tmpdir, 'cwd');
    mkdirSync(cwd);
    const conn = await ctx.connect(LOG_COMMAND);
    try {
      await seedLogRedirectOption(conn, '-stderr', cwd);
      await conn.call('log', 'meant for stderr');
    } finally {
      await conn.close();
    }
    const stray = join(cwd, '-stderr');
    if (existsSync(stray)) {
      const written = readFileSync(stray, 'utf8');
      ctx.note(`the log went to a file named "-stderr": ${JSON.stringify(written)}`);
      assert.match(written, /meant for stderr/, 'the command logged through the fd fdbridge duplicated into it');
      throw new CheckFailure('log-went-to-file-named-stderr', '--logfile -stderr wrote the log to a file named "-stderr" (the seed\'s missing else)');
    }
  },
};

export default scenario;
