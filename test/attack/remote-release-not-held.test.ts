/**
 * `fdbridge serve --stdio` (the remote transport's server) answers a
 * RELEASE by the rule every server follows (test/attack/release-not-held
 * for the socket transports' servers): one that names a number its command
 * does not hold for the client (one the command adopted, one released
 * already or named twice, one of the server's own fds, a number nothing
 * holds) is answered with an ERROR (ProtocolError) naming those numbers,
 * which are left alone, and the ones named that it holds are released all
 * the same; the connection serves on. The client library names only
 * numbers it was given in a RELEASE (a failed batch's, whose ERROR it
 * ignores): the test calls its release with the others. The server's fd
 * table is read to see what was closed there.
 *
 * A copy the command closed itself (fs.closeSync) is still held for the
 * client, so naming it is no refusal; but the number may hold a file of
 * the command's own by then, which the release leaves open.
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, RemoteError } from '../../src';
import { PROBE_COMMAND } from '../../src/commands/probe-command';
import { closeFds, makePipe, openFdTable } from '../../src/fd';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { fdTableSettles } from '../util/processes';
import { notHeldMessage, releaseList } from '../util/release-lists';
import { scaled } from '../util/time-scale';
import { assertGuarded } from '../util/wait-for';
import { within } from '../util/within';

/** What a number named in the RELEASE is to the command's side. */
type Kind = 'held' | 'adopted' | 'released' | 'servers-own' | 'nothing';

/** The server's stderr: open there, and never the command's. */
const SERVERS_OWN = 2;

/** A hang guard for each reply, far above what one takes: a request left unanswered fails named, not at jest's limit. */
const GUARD_MS = scaled(20_000);

const RAW_CLOSE = { name: 'rawclose', module: join(__dirname, 'fixtures', 'raw-close-command.js'), export: 'RawCloseCommand' };

test('generated RELEASE lists on remote: ERROR (ProtocolError) for one naming a number not held for the client, nothing else closed, the held ones named released, the connection serving on', async () => {
  const before = openFdTable();
  const conn = await connect('remote', { command: PROBE_COMMAND, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
  const release = (fds: number[]): Promise<void> =>
    within((conn as unknown as { release(fds: number[]): Promise<void> }).release(fds), GUARD_MS, `the reply to RELEASE of ${fds.join(', ')}`);
  const call = (method: string, ...args: unknown[]): Promise<unknown> => within(conn.call(method, ...args), GUARD_MS, `the reply to ${method}()`);
  try {
    // The server's table once its runtime has settled (the first call opens what it opens lazily).
    const { pid } = (await call('where')) as { pid: number };
    const serverBaseline = openFdTable(pid);
    await assertGuarded(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 5 }),
        fc.array(fc.constantFrom<Kind>('held', 'held', 'adopted', 'released', 'servers-own', 'nothing'), { minLength: 1, maxLength: 8 }),
        fc.boolean(),
        async (given, kinds, repeat) => {
          const pipes = Array.from({ length: given }, () => makePipe());
          let copies: number[] = [];
          let adopted = false;
          try {
            copies = await within(conn.dupFileDescriptors(pipes.map(([r]) => r)), GUARD_MS, 'the reply to the DUP');
            // What each copy's number names over there: its end of a pipe of the server's.
            const named0 = openFdTable(pid);
            const targetOf = (fd: number): string | undefined => named0.get(fd);
            // The first copy adopted by the command, the second released already, the rest held.
            await call('adopt', [copies[0]]);
            adopted = true;
            await release([copies[1] as number]);
            const held = copies.slice(2);
            // Each held copy once; none left: a held one named twice (its second naming not held).
            const { named, releasedNow, notHeld } = releaseList(kinds, held, {
              adopted: copies[0] as number,
              released: copies[1] as number,
              'servers-own': SERVERS_OWN,
              nothing: 1_000_000,
            }, repeat);

            const outcome = await release(named.map((n) => n.fd)).then(
              () => 'RESULT',
              (err: unknown) => err,
            );
            if (notHeld.length === 0) {
              expect(outcome).toBe('RESULT');
            } else {
              expect(outcome).toBeInstanceOf(RemoteError);
              const { name, code, message } = (outcome as RemoteError).remote;
              expect({ name, code, message }).toEqual({
                name: 'ProtocolError',
                code: 'ERR_FDBRIDGE_PROTOCOL',
                message: notHeldMessage(named.length, notHeld, releasedNow.size),
              });
            }
            // The reply comes once the held ones named are closed over there; the others (adopted, the server's own) are open still.
            const after = openFdTable(pid);
            for (const fd of held) expect({ fd, open: after.get(fd) === targetOf(fd) }).toEqual({ fd, open: !releasedNow.has(fd) });
            expect({ adopted: after.get(copies[0] as number) === targetOf(copies[0] as number), own: after.get(SERVERS_OWN) === serverBaseline.get(SERVERS_OWN) }).toEqual({
              adopted: true,
              own: true,
            });
            // The connection serves on, and what is still held is still releasable.
            const rest = held.filter((fd) => !releasedNow.has(fd));
            if (rest.length > 0) await expect(release(rest)).resolves.toBeUndefined();
            await call('closeAdopted', [copies[0]]);
            adopted = false;
          } finally {
            if (adopted) await call('closeAdopted', [copies[0]]);
            closeFds(pipes.flat());
          }
          expect(await fdTableSettles(pid, serverBaseline)).toBe('');
        },
      ),
      // Besides the generated lists: ones that name only held copies (RESULT).
      { numRuns: 30, examples: [[5, ['held', 'held', 'held'], false], [3, ['held'], false]] },
    );
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(180_000));

test('generated: a RELEASE naming copies the command closed itself, files of its own opened at some of their numbers, is answered RESULT and leaves those files open', async () => {
  const before = openFdTable();
  const conn = await connect('remote', { command: RAW_CLOSE, ...LOCAL_REMOTE, timeoutMs: scaled(10_000) });
  const release = (fds: number[]): Promise<void> =>
    within((conn as unknown as { release(fds: number[]): Promise<void> }).release(fds), GUARD_MS, `the reply to RELEASE of ${fds.join(', ')}`);
  const call = (method: string, ...args: unknown[]): Promise<unknown> => within(conn.call(method, ...args), GUARD_MS, `the reply to ${method}()`);
  try {
    const { pid } = conn.location;
    // The server's table once its runtime has settled (the first call opens what it opens lazily).
    await call('files', [0]);
    const serverBaseline = openFdTable(pid);
    // The server's fd 0 reads /dev/null (serveStdio): the file the command opens at the numbers.
    const [devNull] = (await call('files', [0])) as [string];
    expect(devNull).toEqual(expect.any(String));
    await assertGuarded(
      fc.asyncProperty(
        // Per copy: left as given, closed by the command, or closed and a file of its own opened at its number.
        fc.array(fc.constantFrom('given', 'closed', 'reopened'), { minLength: 1, maxLength: 5 }),
        async (fates) => {
          const pipes = fates.map(() => makePipe());
          const reopened: number[] = [];
          try {
            const copies = await within(conn.dupFileDescriptors(pipes.map(([r]) => r)), GUARD_MS, 'the reply to the DUP');
            const targets = openFdTable(pid);
            const closedThere = copies.filter((_, i) => fates[i] !== 'given');
            await call('rawClose', closedThere);
            // Opened lowest number first: each number is the lowest free one when its turn comes.
            for (const fd of copies.filter((_, i) => fates[i] === 'reopened').sort((x, y) => x - y)) {
              reopened.push((await call('openAt', '/dev/null', fd)) as number);
            }
            await expect(release(copies)).resolves.toBeUndefined();
            const after = openFdTable(pid);
            copies.forEach((fd, i) => {
              // A given copy is closed by the release; a number that holds the command's own file holds it still.
              expect({ fd, fate: fates[i], open: after.has(fd) && after.get(fd) === targets.get(fd) }).toEqual({ fd, fate: fates[i], open: false });
            });
            expect(await call('files', reopened)).toEqual(reopened.map(() => devNull));
          } finally {
            // The command's own files: its to close.
            if (reopened.length > 0) await call('rawClose', reopened);
            closeFds(pipes.flat());
          }
          expect(await fdTableSettles(pid, serverBaseline)).toBe('');
        },
      ),
      { numRuns: 25 },
    );
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(180_000));
