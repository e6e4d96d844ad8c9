/**
 * A log redirect without a connection, the arrangement fdbridge's design
 * comes from: the command (wherever the transport runs it) binds a datagram
 * socket at a path; the client, with no connection to that socket, sends it
 * "redirect your log to this fd" with the fd (sendTo from its own bound
 * socket, one datagram carrying the fd), gets "ok" back at its address,
 * closes its own copy, and the command's log lines land in the client's
 * file. Then a second redirect (the first fd is closed by the command), a
 * sender that is not bound (no answer possible: the log shows it worked),
 * and a malformed request with two fds (refused, both closed): the leak
 * oracle checks every process's fd table.
 */
import { strict as assert } from 'node:assert';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { DatagramSocket, LOG_COMMAND, type LogCommand } from '../src';
import type { Scenario } from '../harness/types';
import { sleep } from './support/common';

const scenario: Scenario = {
  name: 'redirect-log-over-datagram',
  description: "a redirect without a connection: the command binds a datagram socket at a path, the client sends it \"redirect\" with an fd and no connection, the command logs into the client's file",
  tags: ['log', 'datagram'],
  async run(ctx) {
    const conn = await ctx.connect(LOG_COMMAND);
    const client = DatagramSocket.bind(join(ctx.tmpdir, 'client', 'client.sock'));
    try {
      const log = conn.proxy<LogCommand>();
      const helperPath = await log.listenForRedirects(join(ctx.tmpdir, 'command', 'log.sock'));
      const redirect = async (file: string, from: DatagramSocket, fds = 1): Promise<string | undefined> => {
        const fd = openSync(file, 'a');
        try {
          await from.sendTo(helperPath, Buffer.from('redirect'), Array.from({ length: fds }, () => fd));
        } finally {
          closeSync(fd); // ours can go: the datagram carries its own reference
        }
        if (from.address === null) return undefined;
        const answer = await from.receive({ timeoutMs: 10_000 });
        assert.equal(answer.from, helperPath, 'the answer came from the socket the command bound');
        assert.deepEqual(answer.fds, []);
        return answer.data.toString();
      };

      const first = join(ctx.tmpdir, 'first.log');
      assert.equal(await redirect(first, client), 'ok');
      const line1 = `over a datagram ${ctx.rng.int(0, 1e9)}`;
      await log.log(line1);
      assert.equal(readFileSync(first, 'utf8'), `${line1}\n`);

      const second = join(ctx.tmpdir, 'second.log');
      assert.equal(await redirect(second, client), 'ok');
      const line2 = `again ${ctx.rng.int(0, 1e9)}`;
      await log.log(line2);
      assert.equal(readFileSync(second, 'utf8'), `${line2}\n`);
      assert.equal(readFileSync(first, 'utf8'), `${line1}\n`, 'nothing more went to the first file');

      // Two fds where one belongs: refused, the log stays where it was.
      assert.match((await redirect(join(ctx.tmpdir, 'bad.log'), client, 2)) ?? '', /^refused: /);

      // An unbound sender: no answer can reach it; the next log line shows the redirect took.
      const unbound = DatagramSocket.open();
      try {
        const third = join(ctx.tmpdir, 'third.log');
        assert.equal(await redirect(third, unbound), undefined);
        const line3 = `from an unbound socket ${ctx.rng.int(0, 1e9)}`;
        // The datagram was queued for the command before this call was sent,
        // but the command's event loop may see the call first (or, on
        // direct, not turn at all between calls): log, let the loops turn,
        // until the line shows (at most 2,000 turns of 5 ms).
        for (let i = 0; i < 2000 && readFileSync(third, 'utf8') === ''; i++) {
          await log.log(line3);
          await sleep(5);
        }
        assert.match(readFileSync(third, 'utf8'), new RegExp(`^(${line3}\\n)+$`));
      } finally {
        unbound.close();
      }
    } finally {
      client.close();
      await conn.close();
    }
  },
};

export default scenario;
