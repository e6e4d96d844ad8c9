/**
 * A RELEASE names copies a client was given (DUP_OK) and no longer wants.
 * One that names a number its command does not hold for it (never given on
 * this connection, another client's copy, one the command adopted, one
 * released already or named twice in the frame, a number nothing holds) is
 * answered with an ERROR (ProtocolError), not as a release that succeeded:
 * those numbers are left alone (another client's copy is still that
 * client's to release, an adopted one still open for the command), the ones
 * named that it does hold are released all the same, and the connection
 * serves on. Raw frames, so that what the client library never sends is
 * sent. The daemon runs in this process: its fds are in this fd table.
 */
import fc from 'fast-check';

import { closeFd, HelperDaemon, makeMemfd, openFdTable } from '../../src';
import { fileAt } from '../../src/fd';
import { decodeFrame, encodeFdList, encodeJson, FrameType, HEADER_BYTES } from '../../src/protocol';
import type { UnixSocket } from '../../src/socket';
import { connectRaw, rawFrame, sayHello } from '../../scenarios/support/hostile';
import { fdTableSettles } from '../util/processes';
import { notHeldMessage, releaseList } from '../util/release-lists';
import { scaled } from '../util/time-scale';
import { assertGuarded } from '../util/wait-for';
import { within } from '../util/within';

/** A hang guard for each reply, far above what one takes: a request left unanswered fails named, not at jest's limit. */
const GUARD_MS = scaled(20_000);

/** What a number named in the RELEASE is to the releasing client. */
type Kind = 'held' | 'adopted' | 'released' | 'other-client' | 'callers-own' | 'nothing';

/** One reply: its frame type and id, and the JSON of an ERROR or RESULT. */
async function reply(socket: UnixSocket): Promise<{ type: number; id: number; json: Record<string, unknown> | undefined; fds: number[] }> {
  const m = await within(socket.receive(), GUARD_MS, 'the reply');
  for (const fd of m.fds) closeFd(fd);
  const type = m.data[0] as number;
  const id = m.data.readUInt32LE(4);
  if (type === FrameType.DUP_OK) return { type, id, json: undefined, fds: (decodeFrame(m.data, []) as { fds: number[] }).fds };
  const text = m.data.toString('utf8', HEADER_BYTES);
  return { type, id, json: text === '' ? undefined : (JSON.parse(text) as Record<string, unknown>), fds: [] };
}

/** DUPs `files` on `socket` as request `id`: the numbers the command holds them at. */
async function dup(socket: UnixSocket, id: number, files: readonly number[]): Promise<number[]> {
  await socket.send(rawFrame(FrameType.DUP, id), [...files]);
  const r = await reply(socket);
  expect({ type: r.type, id: r.id }).toEqual({ type: FrameType.DUP_OK, id });
  return r.fds;
}

async function call(socket: UnixSocket, id: number, method: string, args: unknown[]): Promise<void> {
  await socket.send(encodeJson(FrameType.CALL, id, { method, args }));
  const r = await reply(socket);
  expect({ method, type: r.type, id: r.id }).toEqual({ method, type: FrameType.RESULT, id });
}

/** Whether `fd` holds the file `of` holds (a memfd of the test's). */
const holds = (fd: number, of: number): boolean => {
  const at = fileAt(fd);
  const want = fileAt(of);
  return at !== undefined && want !== undefined && at.dev === want.dev && at.ino === want.ino;
};

/** How many fds of this process hold the file `of` holds, `of` itself left out. */
const copiesOf = (of: number): number => [...openFdTable().keys()].filter((fd) => fd !== of && holds(fd, of)).length;

test('generated RELEASE lists: ERROR (ProtocolError) for one naming a number not held for the client, nothing of anyone else closed, the held ones named released, the connection serving on', async () => {
  const before = openFdTable();
  const daemon = HelperDaemon.start({ socketPath: `@fdbridge-release-not-held-${process.pid}`, diagnostics: true });
  try {
    await assertGuarded(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 5 }),
        fc.array(fc.constantFrom<Kind>('held', 'held', 'adopted', 'released', 'other-client', 'callers-own', 'nothing'), { minLength: 1, maxLength: 8 }),
        fc.boolean(),
        async (given, kinds, repeat) => {
          const a = await connectRaw(daemon.socketPath);
          const b = await connectRaw(daemon.socketPath);
          // One memfd a copy: what a number holds tells which copy it is.
          const files = Array.from({ length: given }, (_, i) => makeMemfd(`release-${i}`));
          const otherFile = makeMemfd('release-other');
          try {
            await sayHello(a);
            await sayHello(b);
            const copies = await dup(a, 1, files);
            const [theirs] = await dup(b, 1, [otherFile]);
            // The first copy adopted by the command, the second released already, the rest held.
            await call(a, 2, 'adopt', [[copies[0]]]);
            await a.send(encodeFdList(FrameType.RELEASE, 3, [copies[1] as number]));
            expect((await reply(a)).type).toBe(FrameType.RESULT);
            const held = copies.slice(2);
            // Each held copy once; none left: a held one named twice (its second naming not held).
            const { named, releasedNow, notHeld } = releaseList(kinds, held, {
              adopted: copies[0] as number,
              released: copies[1] as number,
              'other-client': theirs as number,
              'callers-own': otherFile,
              nothing: 1_000_000,
            }, repeat);
            const allHeld = named.every((n) => n.kind === 'held');

            await a.send(encodeFdList(FrameType.RELEASE, 4, named.map((n) => n.fd)));
            const r = await reply(a);
            if (allHeld) {
              expect({ type: r.type, id: r.id }).toEqual({ type: FrameType.RESULT, id: 4 });
            } else {
              expect({ type: r.type, id: r.id, name: r.json?.['name'], code: r.json?.['code'], message: r.json?.['message'] }).toEqual({
                type: FrameType.ERROR,
                id: 4,
                name: 'ProtocolError',
                code: 'ERR_FDBRIDGE_PROTOCOL',
                // Which numbers were not held, and how many of the others were released.
                message: notHeldMessage(named.length, notHeld, releasedNow.size),
              });
            }
            // The reply comes once the held ones named are closed: no copy of theirs is left.
            for (let i = 2; i < given; i++) {
              const fd = copies[i] as number;
              expect({ copy: i, left: copiesOf(files[i] as number) }).toEqual({ copy: i, left: releasedNow.has(fd) ? 0 : 1 });
            }
            // Nothing of anyone else's closed: the adopted copy, the other client's, the caller's own file.
            expect({ adopted: holds(copies[0] as number, files[0] as number), theirs: holds(theirs as number, otherFile), own: fileAt(otherFile) !== undefined }).toEqual({
              adopted: true,
              theirs: true,
              own: true,
            });
            // The connection serves on, and what is still held is still releasable; the other client's copy is still its own.
            const rest = held.filter((fd) => !releasedNow.has(fd));
            if (rest.length > 0) {
              await a.send(encodeFdList(FrameType.RELEASE, 5, rest));
              expect((await reply(a)).type).toBe(FrameType.RESULT);
            }
            await call(a, 6, 'closeAdopted', [[copies[0]]]);
            await b.send(encodeFdList(FrameType.RELEASE, 2, [theirs as number]));
            expect((await reply(b)).type).toBe(FrameType.RESULT);
            for (let i = 0; i < given; i++) expect({ copy: i, left: copiesOf(files[i] as number) }).toEqual({ copy: i, left: 0 });
            expect(copiesOf(otherFile)).toBe(0);
          } finally {
            a.close();
            b.close();
            for (const fd of files) closeFd(fd);
            closeFd(otherFile);
          }
        },
      ),
      // Besides the generated lists: ones that name only held copies (RESULT).
      { numRuns: 30, examples: [[5, ['held', 'held', 'held'], false], [3, ['held'], false]] },
    );
  } finally {
    await daemon.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(120000));
