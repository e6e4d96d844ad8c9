/**
 * An fd hand-over in four steps through a socket file, as the seed's
 * dupFileDescriptor: does it (the seed: the backup tool's helper code
 * fdbridge's design comes from). (1) the command binds a datagram socket to a
 * temporary file; (2) the client makes an anonymous socket; (3) the client
 * sends the fd to the bound socket; (4) the command receives it, closes the
 * socket and deletes the file. A command that dies between (3) and (4) never
 * deletes it. Here the command's steps are a command (SeedExchangeCommand)
 * run by fdbridge on the child transport, the client's steps use fdbridge's
 * UnixSocket, and the command's process is SIGKILLed between the steps:
 * fdbridge must fail the pending step with PeerExitedError, and then the
 * check that no socket file is left fails, which is the declared failure.
 * (fdbridge over a socketpair leaves none: kill-child-mid-transfer.)
 */
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { makeMemfd, PeerExitedError, UnixSocket, type Connection } from '../src';
import { CheckFailure } from '../harness/check';
import type { Scenario, ScenarioContext } from '../harness/types';
import { closeAll } from './support/common';
import { SEED_EXCHANGE_COMMAND } from './support/seed-commands';

/** Steps (1) to (3); resolves with the connection, the command still to do (4). */
async function firstSteps(ctx: ScenarioContext, path: string, fd: number): Promise<Connection> {
  const conn = await ctx.connect(SEED_EXCHANGE_COMMAND);
  await conn.call('bind', path);
  const sock = await UnixSocket.connect(path, { kind: 'dgram' });
  try {
    await sock.send(Buffer.alloc(1), [fd]);
  } finally {
    sock.close();
  }
  return conn;
}

const scenario: Scenario = {
  name: 'reproduce-seed-socket-file-orphan',
  description: "the seed's four-step exchange, as a command fdbridge runs, leaves its bound socket file behind when the command's process dies between the steps; the file check fails",
  transports: ['child'],
  expect: 'fail',
  failure: { error: { name: 'CheckFailure', check: 'socket-file-outlived-command' } },
  // It ends the command's process on purpose: the oracle cannot read that process's fds again.
  ends: ['command'],
  tags: ['seed-bug'],
  async run(ctx) {
    const fd = makeMemfd('seed-exchange');
    try {
      // The whole exchange first: the command does delete its file when nobody dies.
      const whole = join(ctx.tmpdir, `fd${ctx.rng.int(0, 1e9)}.socket`);
      const done = await firstSteps(ctx, whole, fd);
      try {
        assert.equal(await done.call('receiveAndUnlink'), 1, '(4) the command received the fd');
      } finally {
        await done.close();
      }
      assert.equal(existsSync(whole), false, 'the complete exchange removed its socket file');

      // Now the command's process dies between (3) and (4).
      const path = join(ctx.tmpdir, `fd${ctx.rng.int(0, 1e9)}.socket`);
      const conn = await firstSteps(ctx, path, fd);
      try {
        process.kill(conn.location.pid, 'SIGKILL');
        await assert.rejects(conn.call('receiveAndUnlink'), PeerExitedError, 'step (4) fails with the command\'s death');
      } finally {
        await conn.close();
      }
      if (existsSync(path)) throw new CheckFailure('socket-file-outlived-command', `the socket file ${path} outlived the command that bound it`);
    } finally {
      closeAll([fd]);
    }
  },
};

export default scenario;
