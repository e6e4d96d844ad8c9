/**
 * The command side of the pidfd transport (src/transports/pidfd-intake.ts)
 * pulls the client's fds through a pidfd for the client's process, after
 * proving it can by pulling the client's end of the socket once. In the
 * command's process that pidfd is fdbridge's own (numbered above the fd
 * floor and registered), as every fd of fdbridge's there: a command that
 * closes a number by mistake through fdbridge's closeFd (its own stale
 * number, which may be one of fdbridge's) is refused with EBADF and the
 * pidfd stays open, so duplications go on. And the probe's copy of the
 * client's end is closed at once: the command's process holds nothing of
 * the client's socket.
 */
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, makeMemfd, closeFd, openFdTable, PROBE_COMMAND, ProtocolError, SystemError, UnsupportedError } from '../../src';
import { commandRequest, type CommandSpec } from '../../src/command';
import { fdIdentity } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { decodeFrame, encodeJson, FRAME_SOCKET_OPTIONS, FrameType, PROTOCOL_VERSION, type Frame } from '../../src/protocol';
import { UnixSocket } from '../../src/socket';
import { failNativeCall, simulateKernelWithoutPassRights } from '../../src/test-hooks';
import { rawSocketPair } from '../../src/testing';
import type { ChildConnection } from '../../src/transports/child';
import { serveConnection, type ServeLimits, type ServeStats } from '../../src/transports/serve';
import { rawFrame, rawSocket } from '../../scenarios/support/hostile';
import { getfdOf } from '../util/getfd';
import { exitOf, fdTableSettles } from '../util/processes';

const HOSTILE_COMMAND = { module: join(packageRoot, 'test', 'fixtures', 'hostile-command.js'), export: 'HostileCommand' };

test("the command process holds no copy of the client's end; a command closing fdbridge's pidfd there through closeFd is refused with EBADF, and duplications go on", async () => {
  const before = openFdTable();
  const conn = await connect('pidfd', { command: HOSTILE_COMMAND });
  const memfd = makeMemfd('after-the-close');
  try {
    // The connection's socket is the one socket this process gained.
    const ours = [...openFdTable()].filter(([fd, target]) => !before.has(fd) && target.startsWith('socket:')).map(([, target]) => target);
    expect(ours).toHaveLength(1);
    const links = await conn.call<Array<[number, string]>>('fdLinks');
    expect(links.filter(([, link]) => link === ours[0])).toEqual([]);
    const pidfds = links.filter(([, link]) => link === 'anon_inode:[pidfd]').map(([fd]) => fd);
    // The pidfd the pulls go through, at least (a watch of this process may hold one more).
    expect(pidfds.length).toBeGreaterThan(0);
    expect(await conn.call('closeNumbers', pidfds)).toEqual(pidfds.map(() => 'EBADF'));
    expect(await conn.call('fdLinks')).toEqual(links);
    const [a, b] = await Promise.all([conn.dupFileDescriptor(memfd), conn.dupFileDescriptors([memfd, memfd])]);
    expect(typeof a).toBe('number');
    expect(b).toHaveLength(2);
  } finally {
    await conn.close();
    closeFd(memfd);
  }
  expect(await exitOf((conn as ChildConnection).child)).toEqual({ code: 0, signal: null });
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

/**
 * The command's side served in this process over a socketpair (its client,
 * the raw far end, is this process too, so pulls through the client's pidfd
 * come from here): what it opens for a pidfd HELLO, how it says why it
 * refuses one, and that every fd it opened is closed when the connection
 * ends. failNativeCall stands in for what this kernel (6.18) does not do:
 * refuse SO_PEERPIDFD (ENOPROTOOPT before Linux 6.5, where the pidfd comes
 * from pidfd_open on the peer's pid instead), lack pidfd_getfd (ENOSYS
 * before 5.6), refuse a pull (EPERM, ESRCH).
 */
describe('served in this process', () => {
  /** How the client's pidfd is had: SO_PEERPIDFD, or pidfd_open after SO_PEERPIDFD is refused. */
  type Opening = 'peerPidfd' | 'pidfdOpen';

  function served(transport: 'child' | 'helper' = 'child', limits?: ServeLimits): { client: UnixSocket; ended: Promise<{ reason: Error | null; stats: ServeStats }> } {
    const [c, s] = rawSocketPair('seqpacket');
    let resolve!: (v: { reason: Error | null; stats: ServeStats }) => void;
    const ended = new Promise<{ reason: Error | null; stats: ServeStats }>((r) => (resolve = r));
    serveConnection(new UnixSocket(s, 'seqpacket', { ...FRAME_SOCKET_OPTIONS }), {
      transport,
      ...(limits ? { limits } : {}),
      onEnd: (reason, stats) => resolve({ reason, stats: { ...stats } }),
    });
    return { client: rawSocket(c), ended };
  }

  /** Sends a pidfd HELLO naming `probeFd` and `command`; the answer, decoded. */
  async function hello(client: UnixSocket, probeFd: number, command: CommandSpec = PROBE_COMMAND): Promise<Frame> {
    await client.send(encodeJson(FrameType.HELLO, 0, { version: PROTOCOL_VERSION, command: commandRequest(command), pull: 'pidfd', probeFd }));
    const m = await client.receive();
    return decodeFrame(m.data, m.fds);
  }

  /** A GETFD naming `fds`; the answer, decoded. */
  async function getfd(client: UnixSocket, id: number, fds: number[]): Promise<Frame> {
    await client.send(getfdOf(id, fds));
    const m = await client.receive();
    return decodeFrame(m.data, m.fds);
  }

  /** Runs `body` with the native calls of `failing` throwing their error; puts them back after. */
  async function withFailing<T>(failing: Array<[Parameters<typeof failNativeCall>[0], Error]>, body: () => Promise<T>): Promise<T> {
    const restores = failing.map(([name, err]) => failNativeCall(name, err));
    try {
      return await body();
    } finally {
      for (const restore of restores.reverse()) restore();
    }
  }

  const SO_PEERPIDFD_REFUSED = (): SystemError => new SystemError(osConstants.errno.ENOPROTOOPT, 'getsockopt(SO_PEERPIDFD)');

  test('the client pidfd, had either way, is fdbridge\'s own; GETFDs are pulled and answered natively, each pulled fd the file named; all of it closed when the connection ends', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<Opening>('peerPidfd', 'pidfdOpen'), fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }), async (opening, counts) => {
        const before = openFdTable();
        const files = [makeMemfd('a'), makeMemfd('b'), makeMemfd('c'), makeMemfd('d')];
        const { client, ended } = served();
        try {
          const opened = openFdTable();
          const answer = await withFailing(opening === 'pidfdOpen' ? [['peerPidfd', SO_PEERPIDFD_REFUSED()]] : [], () => hello(client, client.fd));
          expect(answer.type).toBe(FrameType.READY);
          const pidfds = [...openFdTable()].filter(([fd, target]) => !opened.has(fd) && target === 'anon_inode:[pidfd]').map(([fd]) => fd);
          expect(pidfds).toHaveLength(1);
          // A command closing that number through fdbridge's closeFd is refused: the pulls go on.
          expect(() => closeFd(pidfds[0] as number)).toThrow(expect.objectContaining({ code: 'EBADF' }));
          // The pulls are the channel's, in one native step: the JavaScript path, made to fail, is never taken.
          for (const [i, count] of counts.entries()) {
            const named = files.slice(0, count);
            const reply = await withFailing([['pidfdGetfdAll', new Error('a GETFD left to JavaScript')]], () => getfd(client, i + 1, named));
            expect(reply.type).toBe(FrameType.DUP_OK);
            const pulled = (reply as Extract<Frame, { type: typeof FrameType.DUP_OK }>).fds;
            expect(pulled.map((fd) => fdIdentity(fd))).toEqual(named.map((fd) => fdIdentity(fd)));
          }
        } finally {
          client.close();
        }
        expect((await ended).reason).toBeNull();
        for (const fd of files) closeFd(fd);
        expect(await fdTableSettles(process.pid, before)).toBe('');
      }),
      { numRuns: 12 },
    );
  });

  /** A refused HELLO: how the native calls fail, what the refusal must say, what error it is made from. */
  interface Refusal {
    name: string;
    failing: Array<[Parameters<typeof failNativeCall>[0], Error]>;
    probeFd?: number;
    says: RegExp;
    saysNot?: RegExp;
    cause: string;
  }

  const NOT_OPEN = 1 << 20;
  const refusals = (): Refusal[] => [
    { name: 'pull refused (EPERM)', failing: [['pidfdGetfd', new SystemError(osConstants.errno.EPERM, 'pidfd_getfd')]], says: /may not ptrace the client/, saysNot: /Linux 5\.6/, cause: 'EPERM' },
    { name: 'no pidfd_getfd (ENOSYS)', failing: [['pidfdGetfd', new SystemError(osConstants.errno.ENOSYS, 'pidfd_getfd')]], says: /the kernel has no pidfd_getfd \(Linux 5\.6\+\)/, saysNot: /ptrace/, cause: 'ENOSYS' },
    { name: 'pull fails otherwise (ESRCH)', failing: [['pidfdGetfd', new SystemError(osConstants.errno.ESRCH, 'pidfd_getfd')]], says: /cannot pull the client's fds: .*ESRCH/, saysNot: /ptrace|Linux 5\.6/, cause: 'ESRCH' },
    { name: 'probe fd not open in the client (EBADF)', failing: [], probeFd: NOT_OPEN, says: /cannot pull the client's fds: .*EBADF/, saysNot: /ptrace|Linux 5\.6/, cause: 'EBADF' },
    { name: 'no pidfd at all (pidfd_open fails)', failing: [['pidfdOpen', new SystemError(osConstants.errno.ENOSYS, 'pidfd_open')]], says: /pidfd_open failed \(.*ENOSYS.*\); it needs Linux 5\.3\+/, cause: 'ENOSYS' },
  ];

  test('a HELLO whose pull cannot be set up is refused with UnsupportedError saying why, made from the failure (its cause); nothing it opened stays open', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...refusals()), fc.constantFrom<Opening>('peerPidfd', 'pidfdOpen'), async (refusal, opening) => {
        // pidfd_open is tried only when SO_PEERPIDFD is refused.
        const failing: Refusal['failing'] = [...refusal.failing];
        if (opening === 'pidfdOpen' || failing.some(([name]) => name === 'pidfdOpen')) failing.push(['peerPidfd', SO_PEERPIDFD_REFUSED()]);
        const before = openFdTable();
        const { client, ended } = served();
        let answer: Frame;
        try {
          answer = await withFailing(failing, () => hello(client, refusal.probeFd ?? client.fd));
        } finally {
          client.close();
        }
        expect(answer.type).toBe(FrameType.ERROR);
        const info = (answer as Extract<Frame, { type: typeof FrameType.ERROR }>).error;
        expect(info.name).toBe('UnsupportedError');
        expect(info.message).toMatch(refusal.says);
        if (refusal.saysNot) expect(info.message).not.toMatch(refusal.saysNot);
        const { reason } = await ended;
        expect(reason).toBeInstanceOf(UnsupportedError);
        expect((reason as Error).message).toBe(info.message);
        expect((reason as Error).cause).toBeInstanceOf(SystemError);
        expect((reason as Error).cause).toMatchObject({ code: refusal.cause });
        expect(await fdTableSettles(process.pid, before)).toBe('');
      }),
      { numRuns: 20 },
    );
  });

  test('a HELLO that fails after the client pidfd is open (SO_PASSRIGHTS refused otherwise than by an old kernel, or no such command) is refused with that error, the pidfd closed', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('setPassRights', 'command'), fc.constantFrom<Opening>('peerPidfd', 'pidfdOpen'), async (failure, opening) => {
        const before = openFdTable();
        const { client, ended } = served();
        const failing: Array<[Parameters<typeof failNativeCall>[0], Error]> = opening === 'pidfdOpen' ? [['peerPidfd', SO_PEERPIDFD_REFUSED()]] : [];
        const refused = new SystemError(osConstants.errno.EINVAL, 'setsockopt(SO_PASSRIGHTS)');
        if (failure === 'setPassRights') failing.push(['setPassRights', refused]);
        let answer: Frame;
        try {
          answer = await withFailing(failing, () => hello(client, client.fd, failure === 'command' ? { name: 'no-such-command' } : PROBE_COMMAND));
        } finally {
          client.close();
        }
        expect(answer.type).toBe(FrameType.ERROR);
        const { reason } = await ended;
        if (failure === 'setPassRights') expect(reason).toBe(refused);
        else expect(reason).toBeInstanceOf(Error);
        expect(await fdTableSettles(process.pid, before)).toBe('');
      }),
      { numRuns: 8 },
    );
  });

  test('a helper daemon refuses a pidfd HELLO, saying its clients send fds; over a quota a GETFD is refused, saying nothing was pulled, and nothing is; a DUP on a pidfd connection (a kernel without SO_PASSRIGHTS lets its fd arrive) ends it with ProtocolError, the fd closed', async () => {
    const before = openFdTable();
    const memfd = makeMemfd('named');
    const target = openFdTable().get(memfd) as string;
    const copies = (): number => [...openFdTable().values()].filter((t) => t === target).length;
    try {
      const helper = served('helper');
      const refusal = await hello(helper.client, helper.client.fd).finally(() => helper.client.close());
      expect(refusal).toMatchObject({ type: FrameType.ERROR, error: { name: 'UnsupportedError' } });
      expect((refusal as Extract<Frame, { type: typeof FrameType.ERROR }>).error.message).toMatch(/takes fds only as its clients send them \(SCM_RIGHTS\)/);
      expect((await helper.ended).reason).toBeInstanceOf(UnsupportedError);

      const quota = served('child', { maxFds: 1, maxCallsInFlight: 8, maxQueuedBytes: 1 << 20 });
      try {
        expect((await hello(quota.client, quota.client.fd)).type).toBe(FrameType.READY);
        const over = await getfd(quota.client, 1, [memfd, memfd]);
        expect(over).toMatchObject({ type: FrameType.ERROR, error: { code: 'ERR_FDBRIDGE_QUOTA' } });
        expect((over as Extract<Frame, { type: typeof FrameType.ERROR }>).error.message).toMatch(/; nothing was pulled$/);
        expect(copies()).toBe(1);
        expect((await getfd(quota.client, 2, [memfd])).type).toBe(FrameType.DUP_OK);
      } finally {
        quota.client.close();
      }
      expect((await quota.ended).reason).toBeNull();

      const restore = simulateKernelWithoutPassRights();
      const old = served();
      try {
        expect((await hello(old.client, old.client.fd)).type).toBe(FrameType.READY);
        await old.client.send(rawFrame(FrameType.DUP, 1), [memfd]);
      } finally {
        restore();
      }
      const { reason, stats } = await old.ended;
      old.client.close();
      expect(reason).toBeInstanceOf(ProtocolError);
      expect((reason as Error).message).toMatch(/^DUP on a pidfd connection, whose client sends fd numbers \(GETFD\)/);
      expect(stats).toMatchObject({ unexpectedFds: 1, protocolErrors: 1 });
    } finally {
      closeFd(memfd);
    }
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });
});
