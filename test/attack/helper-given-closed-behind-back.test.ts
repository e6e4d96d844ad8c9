/**
 * A helper daemon's command is given fds (a DUP) and does not adopt them:
 * the connection's close closes them. A command that closed one itself
 * (fs.closeSync) frees its number, and the next fd the daemon receives
 * lands there: another client's, of another uid. The first connection's
 * close (or its command's adoptFd of that number) must leave that fd
 * alone: the other client's fd stays open, holding its file, whether its
 * command keeps it unadopted or adopted it, and the daemon's fd table is
 * back to its start once both are gone. Run as root (client A, whose
 * command closes behind fdbridge's back), the other client as nobody.
 */
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, openFdTable, RemoteError } from '../../src';
import { DIST_SRC, isRoot, NOBODY, runAsNobody } from '../util/nobody';
import { fdTableSettles, startHelperProcess } from '../util/processes';
import { assertGuarded } from '../util/wait-for';

const describeRoot = isRoot ? describe : describe.skip;

const FIXTURE = join(__dirname, 'fixtures', 'raw-close-command.js');
const RAW_CLOSE = { name: 'rawclose', module: FIXTURE, export: 'RawCloseCommand' };

/**
 * Client B, as nobody: connects (its socket takes its number in the daemon
 * now), then on each stdin line: DUPs its file (adopting it if asked) and
 * prints the number and the file the daemon holds there; then prints that
 * file again, or the error reading it gives.
 */
const CLIENT_B = `
const fs = require('node:fs');
const { connect, PROBE_COMMAND } = require(${JSON.stringify(DIST_SRC)});
const lines = require('node:readline').createInterface({ input: process.stdin })[Symbol.asyncIterator]();
(async () => {
  const src = fs.openSync(process.env.B_FILE, 'r');
  const st = fs.fstatSync(src, { bigint: true });
  const c = await connect('helper', { command: PROBE_COMMAND, socketPath: process.env.B_SOCKET, trustPeer: { uids: [0] } });
  console.log(JSON.stringify({ connected: true }));
  await lines.next();
  const fd = await c.dupFileDescriptor(src);
  if (process.env.B_ADOPT === '1') await c.call('adopt', [fd]);
  console.log(JSON.stringify({ fd, before: (await c.call('identities', [fd]))[0], file: { dev: String(st.dev), ino: String(st.ino) } }));
  await lines.next();
  let after;
  try { after = (await c.call('identities', [fd]))[0]; } catch (e) { after = e.constructor.name + ': ' + e.message; }
  console.log(JSON.stringify({ after }));
  await c.close();
  fs.closeSync(src);
})().catch((e) => { console.log(JSON.stringify({ failed: String(e && e.stack) })); process.exitCode = 1; });
`;

describeRoot("a helper command's given fd it closed itself: the number another uid's fd takes stays that fd's", () => {
  test('generated: A gives some fds, its command closes one; B (nobody) DUPs there, keeps or adopts it; A tries to adopt it or not, then closes', async () => {
    const name = `fdbridge-given-behind-${process.pid}`;
    const socketPath = `@${name}`;
    const daemon = await startHelperProcess(socketPath, ['--allow-uid', String(NOBODY), '--command', `rawclose=${FIXTURE}#RawCloseCommand`]);
    try {
      const baseline = openFdTable(daemon.pid);
      await assertGuarded(
        fc.asyncProperty(
          fc.record({
            bFile: fc.constantFrom('/dev/null', '/etc/hostname', '/etc/passwd'),
            bAdopts: fc.boolean(),
            aGives: fc.integer({ min: 1, max: 3 }),
            closedAt: fc.nat(2),
            aAdoptsThere: fc.boolean(),
          }),
          async ({ bFile, bAdopts, aGives, closedAt, aAdoptsThere }) => {
            const b = runAsNobody(CLIENT_B, { B_FILE: bFile, B_SOCKET: socketPath, B_ADOPT: bAdopts ? '1' : '0' });
            const aFile = openSync('/dev/zero', 'r');
            try {
              await b.line('connected');
              const a = await connect('helper', { command: RAW_CLOSE, socketPath });
              const given = await a.dupFileDescriptors(Array<number>(aGives).fill(aFile));
              const closed = given[closedAt % aGives] as number;
              expect(await a.call('rawClose', [closed])).toBe(1);

              // B's next DUP lands at the number A's command freed (the lowest free one).
              b.child.stdin?.write('dup\n');
              const landed = await b.line<{ fd: number; before: { dev: string; ino: string }; file: { dev: string; ino: string } }>('fd');
              expect(landed.fd).toBe(closed);
              expect({ dev: landed.before.dev, ino: landed.before.ino }).toEqual(landed.file);

              // A's command cannot adopt B's fd at that number: its own copy there is gone.
              if (aAdoptsThere) await expect(a.call('adopt', [closed])).rejects.toThrow(RemoteError);
              await a.close();

              b.child.stdin?.end('check\n');
              expect((await b.line<{ after: unknown }>('after')).after).toEqual(landed.before);
              const ended = await b.exited();
              expect(ended.stdout).not.toContain('"failed"');
              expect(ended.code).toBe(0);
              expect(await fdTableSettles(daemon.pid, baseline, 10000)).toBe('');
            } finally {
              b.kill();
              await b.exited();
              closeSync(aFile);
            }
          },
        ),
        { numRuns: 8 },
      );
    } finally {
      await daemon.stop('SIGKILL');
    }
  }, 120000);
});
