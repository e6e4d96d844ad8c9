/**
 * The typed errors a user catches: their codes and fields, the brand check
 * that makes `instanceof` work across copies of the library, and how they
 * travel (describeError, QuotaExceededError.fromMessage).
 */
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import { getSystemErrorName } from 'node:util';
import vm from 'node:vm';

import fc from 'fast-check';

import {
  ClosedError,
  describeError,
  EofError,
  errnoName,
  farSystemError,
  FdBridgeError,
  isError,
  isFdBridgeError,
  PeerExitedError,
  PeerGoneError,
  PeerRefusedError,
  ProtocolError,
  QueueFullError,
  QuotaExceededError,
  RemoteError,
  SystemError,
  TimeoutError,
  TruncatedError,
  UnknownCommandError,
  UnsupportedError,
  type QuotaName,
} from '../../src/errors';
import { LINUX_ERRNOS, LINUX_GENERIC_ERRNO_ARCHS, linuxErrno } from '../../src/linux-errnos';
import { DIST_SRC, isRoot, ownUid, spawnAsUid } from '../util/nobody';

const BRAND = Symbol.for('fdbridge.error');

/** The class names an error is branded with (a global symbol, so another copy of the library reads it too). */
function brand(err: unknown): unknown {
  return (err as Record<symbol, unknown>)[BRAND];
}

describe('FdBridgeError and its brand', () => {
  const classes: Array<[new (m: string) => FdBridgeError, string]> = [
    [ClosedError, 'ERR_FDBRIDGE_CLOSED'],
    [TimeoutError, 'ERR_FDBRIDGE_TIMEOUT'],
    [PeerGoneError, 'ERR_FDBRIDGE_PEER_GONE'],
    [ProtocolError, 'ERR_FDBRIDGE_PROTOCOL'],
    [UnsupportedError, 'ERR_FDBRIDGE_UNSUPPORTED'],
    [UnknownCommandError, 'ERR_FDBRIDGE_UNKNOWN_COMMAND'],
    [EofError, 'ERR_FDBRIDGE_EOF'],
  ];

  test.each(classes)('%p has its stable code, its class name, and is an Error and an FdBridgeError', (Cls, code) => {
    const err = new Cls('what happened');
    expect(err.code).toBe(code);
    expect(err.message).toBe('what happened');
    expect(err.name).toBe(Cls.name);
    expect(err).toBeInstanceOf(Error);
    expect(err).toBeInstanceOf(FdBridgeError);
    expect(err).toBeInstanceOf(Cls);
    expect(isFdBridgeError(err)).toBe(true);
    // The brand lists the class chain up to (not including) Error.
    expect(brand(err)).toEqual([Cls.name, 'FdBridgeError']);
  });

  test('an end of file with no words of its own says the peer closed the socket', () => {
    const err = new EofError();
    expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_EOF', message: 'the peer closed the socket' });
    expect(err.cause).toBeUndefined();
  });

  test('one class is not an instance of a sibling class', () => {
    expect(new ClosedError('x')).not.toBeInstanceOf(TimeoutError);
    expect(new TimeoutError('x')).not.toBeInstanceOf(ClosedError);
    expect(new FdBridgeError('ERR_X', 'x')).not.toBeInstanceOf(ClosedError);
  });

  test('an error built by another copy of the library (same brand, other classes) passes instanceof', () => {
    // What another copy's ClosedError looks like from here: a plain Error with the brand.
    const foreign = Object.assign(new Error('closed elsewhere'), {
      code: 'ERR_FDBRIDGE_CLOSED',
      [BRAND]: ['ClosedError', 'FdBridgeError'],
    });
    expect(foreign).toBeInstanceOf(ClosedError);
    expect(foreign).toBeInstanceOf(FdBridgeError);
    expect(isFdBridgeError(foreign)).toBe(true);
    expect(foreign).not.toBeInstanceOf(TimeoutError);
  });

  test('values without the brand: only real prototypes count', () => {
    expect(isFdBridgeError(new Error('plain'))).toBe(false);
    expect(isFdBridgeError(null)).toBe(false);
    expect(isFdBridgeError(undefined)).toBe(false);
    expect(isFdBridgeError('ERR_FDBRIDGE_CLOSED')).toBe(false);
    expect(isFdBridgeError({ code: 'ERR_FDBRIDGE_CLOSED' })).toBe(false);
    // A brand that is not a list is no brand: the prototype decides.
    expect(isFdBridgeError({ [BRAND]: 'FdBridgeError' })).toBe(false);
    expect(Object.create(ClosedError.prototype)).toBeInstanceOf(ClosedError);
    expect(Object.create(ClosedError.prototype)).toBeInstanceOf(FdBridgeError);
  });

  test('a cause is kept when given, and there is no cause property otherwise', () => {
    const cause = new Error('root');
    const withCause = new FdBridgeError('ERR_X', 'x', { cause });
    expect(withCause.cause).toBe(cause);
    expect(new TimeoutError('t', { cause }).cause).toBe(cause);
    const without = new FdBridgeError('ERR_X', 'x', {});
    expect('cause' in without).toBe(false);
    expect('cause' in new FdBridgeError('ERR_X', 'x')).toBe(false);
    // A falsy cause that is not undefined is still a cause.
    expect(new FdBridgeError('ERR_X', 'x', { cause: 0 }).cause).toBe(0);
  });

  test('a subclass of a subclass lists its whole chain', () => {
    class Inner extends ClosedError {}
    const err = new Inner('x');
    expect(brand(err)).toEqual(['Inner', 'ClosedError', 'FdBridgeError']);
    expect(err.name).toBe('Inner');
    expect(err).toBeInstanceOf(ClosedError);
  });
});

describe('SystemError', () => {
  test('a positive or negative errno gives the same negative errno, errno name as code, and the syscall', () => {
    for (const errno of [constants.errno.EBADF, -constants.errno.EBADF]) {
      const err = new SystemError(errno, 'close');
      expect(err.errno).toBe(-constants.errno.EBADF);
      expect(err.code).toBe('EBADF');
      expect(err.syscall).toBe('close');
      expect(err.message).toBe('close failed: EBADF (bad file descriptor)');
      expect(err).toBeInstanceOf(FdBridgeError);
    }
  });

  test('a message and a cause given replace the default message and are kept', () => {
    const cause = new Error('under');
    const err = new SystemError(-constants.errno.EMFILE, 'recvmsg', 'out of fds', { cause });
    expect(err.message).toBe('out of fds');
    expect(err.code).toBe('EMFILE');
    expect(err.cause).toBe(cause);
  });

  const described = [
    'EBADF', 'EINVAL', 'EPIPE', 'ECONNRESET', 'ECONNREFUSED', 'ENOENT', 'EADDRINUSE', 'ENAMETOOLONG', 'EMFILE',
    'EPERM', 'EACCES', 'ESRCH', 'EAGAIN', 'ECANCELED', 'ENOTSOCK', 'ENOSYS', 'ENOPROTOOPT', 'EMSGSIZE',
  ] as const;

  test('every errno the library meets has its own explanation; others say "system error"', () => {
    const explanations = described.map((name) => {
      const err = new SystemError(constants.errno[name], 'op');
      expect(err.code).toBe(name);
      const m = /^op failed: (\w+) \((.*)\)$/.exec(err.message);
      expect(m?.[1]).toBe(name);
      expect(m?.[2]).not.toBe('system error');
      expect(m?.[2]?.length).toBeGreaterThan(5);
      return m?.[2];
    });
    expect(new Set(explanations).size).toBe(described.length);
    expect(new SystemError(-constants.errno.EXDEV, 'rename').message).toBe('rename failed: EXDEV (system error)');
  });

  test('errnoName takes either sign; an errno with no name is described, not thrown', () => {
    expect(errnoName(constants.errno.ENOENT)).toBe('ENOENT');
    expect(errnoName(-constants.errno.ENOENT)).toBe('ENOENT');
    expect(errnoName(0)).toBe('Unknown system error 0');
    expect(errnoName(-99999)).toMatch(/^Unknown system error -?99999$/);
    const err = new SystemError(0, 'weird');
    expect(err.errno).toBe(0); // not -0: Object.is and toBe tell them apart
    expect(err.code).toBe('Unknown system error 0');
    expect(err.message).toBe('weird failed: Unknown system error 0 (system error)');
  });
});

describe("Linux's errno names where libuv has none", () => {
  const linux = process.platform === 'linux' && LINUX_GENERIC_ERRNO_ARCHS.has(process.arch);

  (linux ? test : test.skip)('ETOOMANYREFS (109) is named in the code and the message', () => {
    expect(errnoName(109)).toBe('ETOOMANYREFS');
    expect(errnoName(-109)).toBe('ETOOMANYREFS');
    const err = new SystemError(-109, 'sendmsg');
    expect(err).toMatchObject({ code: 'ETOOMANYREFS', errno: -109, syscall: 'sendmsg' });
    expect(err.message).toBe('sendmsg failed: ETOOMANYREFS (Too many references: cannot splice)');
  });

  // The kernel refuses SCM_RIGHTS with ETOOMANYREFS once a user's fds in
  // flight pass its RLIMIT_NOFILE (unless it has CAP_SYS_RESOURCE or
  // CAP_SYS_ADMIN): a uid of this process's own (ownUid: the count is the
  // user's, across all its processes, so nobody's would take in another
  // test's fds in flight), with a soft limit of 64, queues 16 copies of a
  // memfd a message into a socket it never reads until sendmsg refuses.
  (linux && isRoot ? test : test.skip)("a real sendmsg refused with ETOOMANYREFS (a user's fds in flight past its RLIMIT_NOFILE) reads ETOOMANYREFS", async () => {
    const script = `
      const L = require(${JSON.stringify(join(DIST_SRC, 'index.js'))});
      const T = require(${JSON.stringify(join(DIST_SRC, 'testing.js'))});
      L.setFdLimit(64);
      const [a, b] = T.rawSocketPair('stream');
      const m = L.makeMemfd('inflight');
      let sent = 0, err = null;
      for (let i = 0; i < 100 && err === null; i++) {
        try { T.sendNow(a, Buffer.from('x'), new Array(16).fill(m)); sent += 16; }
        catch (e) { err = { name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, message: e.message }; }
      }
      console.log(JSON.stringify({ result: { sent, err } }));`;
    const p = spawnAsUid(ownUid(0), process.execPath, ['-e', script]);
    const { result } = await p.line<{ result: { sent: number; err: Record<string, unknown> | null } }>('result');
    expect((await p.exited()).code).toBe(0);
    // The kernel checks the count before a message adds its fds: 64 in flight is not past the limit, so a fifth message goes.
    expect(result.sent).toBe(64 + 16);
    expect(result.err).toEqual({
      name: 'SystemError',
      code: 'ETOOMANYREFS',
      errno: -109,
      syscall: 'sendmsg',
      message: expect.stringContaining('ETOOMANYREFS (Too many references: cannot splice)'),
    });
  });

  test('generated: libuv\'s name wins wherever it has one; else the table\'s, only on a Linux with the generic numbers; else "Unknown system error"', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -200, max: 200 }),
        fc.constantFrom('linux', 'darwin', 'freebsd'),
        fc.constantFrom('x64', 'arm64', 'mips', 'sparc', 'ppc64'),
        (errno, platform, arch) => {
          let uv: string | undefined;
          try {
            uv = getSystemErrorName(errno > 0 ? -errno : errno);
          } catch {
            uv = undefined;
          }
          const known = uv !== undefined && !uv.startsWith('Unknown system error');
          const own = linuxErrno(Math.abs(errno), platform, arch);
          const applies = platform === 'linux' && LINUX_GENERIC_ERRNO_ARCHS.has(arch);
          expect(own !== undefined).toBe(applies && LINUX_ERRNOS.has(Math.abs(errno)));
          // What errnoName gives in this process.
          const here = linuxErrno(Math.abs(errno));
          expect(errnoName(errno)).toBe(known ? uv : (here?.[0] ?? (uv ?? `Unknown system error ${errno}`)));
        },
      ),
    );
  });

  (linux ? test : test.skip)('the table names an errno as libuv does where the libuv of the running Node names it (newer ones name more, e.g. ENOEXEC on Node 24), and every name is an E-name of its own', () => {
    const names = new Set<string>();
    for (const [n, [name, message]] of LINUX_ERRNOS) {
      const uv = getSystemErrorName(-n);
      if (!/^Unknown system error/.test(uv)) expect(uv).toBe(name);
      expect(name).toMatch(/^E[A-Z0-9]+$/);
      expect(message.length).toBeGreaterThan(5);
      names.add(name);
      // Where Node knows the constant, it is the same number.
      const os = (constants.errno as Record<string, number | undefined>)[name];
      if (os !== undefined) expect(os).toBe(n);
    }
    expect(names.size).toBe(LINUX_ERRNOS.size);
  });
});

describe('errors with fields', () => {
  test('TruncatedError: control truncation keeps the message data it got and counts the closed fds', () => {
    const data = Buffer.from('request');
    const err = new TruncatedError('control', 3, 7, 'recvmsg', data);
    expect(err.code).toBe('ERR_FDBRIDGE_TRUNCATED');
    expect(err.what).toBe('control');
    expect(err.fdsClosed).toBe(3);
    expect(err.bytes).toBe(7);
    expect(err.data).toBe(data);
    expect(err.message).toMatch(/^recvmsg: message truncated: .*MSG_CTRUNC.*; 3 fd\(s\) that did arrive were closed$/);
  });

  test('TruncatedError: data truncation names the size; data defaults to empty; syscall defaults to recvmsg', () => {
    const err = new TruncatedError('data', 0, 70000);
    expect(err.what).toBe('data');
    expect(err.data).toEqual(Buffer.alloc(0));
    expect(err.message).toMatch(/^recvmsg: message truncated: its 70000 data bytes .*MSG_TRUNC/);
    expect(err.message).not.toMatch(/MSG_CTRUNC/);
    expect(new TruncatedError('data', 1, 5, 'recvfrom').message).toMatch(/^recvfrom: /);
  });

  test('QueueFullError carries what the queue held and its limit', () => {
    const cause = new Error('c');
    const err = new QueueFullError('full', { queuedBytes: 10, queuedMessages: 2, limit: 8 }, { cause });
    expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_QUEUE_FULL', queuedBytes: 10, queuedMessages: 2, limit: 8 });
    expect(err.cause).toBe(cause);
  });

  test('PeerExitedError names where the peer ran and how it ended', () => {
    const cases: Array<[ConstructorParameters<typeof PeerExitedError>[1], string]> = [
      [{ transport: 'worker', pid: 1, threadId: 4, exitCode: 1, signal: null }, 'the worker thread 4 exited with code 1'],
      [{ transport: 'worker', pid: 1, exitCode: null, signal: null }, 'the worker thread ? closed the connection'],
      [{ transport: 'helper', pid: 77, exitCode: null, signal: 'SIGKILL' }, 'the helper daemon (pid 77) was killed by SIGKILL'],
      [{ transport: 'child', pid: 78, exitCode: 0, signal: null }, 'the child process (pid 78) exited with code 0'],
      [{ transport: 'pidfd', pid: 79, exitCode: null, signal: null, detail: 'exited' }, 'the pidfd process (pid 79) exited'],
      [{ transport: 'remote', pid: 81, exitCode: 255, signal: null }, "the remote command's channel (via process pid 81) exited with code 255"],
      // A signal wins over an exit code: the code is meaningless then.
      [{ transport: 'child', pid: 80, exitCode: 3, signal: 'SIGTERM' }, 'the child process (pid 80) was killed by SIGTERM'],
    ];
    for (const [exit, text] of cases) {
      const err = new PeerExitedError('dupFileDescriptor(7)', exit);
      expect(err.message).toBe(`dupFileDescriptor(7) failed: ${text} before replying`);
      expect(err).toMatchObject({
        code: 'ERR_FDBRIDGE_PEER_EXITED',
        transport: exit.transport,
        pid: exit.pid,
        threadId: exit.threadId,
        exitCode: exit.exitCode,
        signal: exit.signal,
      });
    }
  });

  test('RemoteError keeps what the command threw and the method', () => {
    const withCode = new RemoteError('open', { name: 'Error', message: 'nope', code: 'ENOENT' });
    expect(withCode).toMatchObject({ code: 'ERR_FDBRIDGE_REMOTE', method: 'open', remote: { code: 'ENOENT' } });
    expect(withCode.message).toBe('open() failed in the command: Error [ENOENT]: nope');
    expect(new RemoteError('run', { name: 'TypeError', message: 'bad' }).message).toBe(
      'run() failed in the command: TypeError: bad',
    );
  });

  test("PeerRefusedError: the daemon's quota is read from its REFUSED message, quoted after the client's words", () => {
    const all: QuotaName[] = ['connections', 'uidConnections', 'fds', 'uidFds', 'totalFds', 'calls', 'queuedBytes', 'helloTimeout', 'idleTimeout'];
    for (const name of all) {
      expect(new PeerRefusedError(`connect: the helper daemon at /s refused this client: quota ${name}: 8 already`).quota).toBe(name);
      // The daemon's message alone (nothing before it) names it too.
      expect(new PeerRefusedError(`quota ${name}: 8 already`).quota).toBe(name);
    }
    // Only a known name, at the start of the daemon's words, and only when the daemon refused.
    expect(new PeerRefusedError('connect: x refused this client: quota bananas: 8').quota).toBeUndefined();
    expect(new PeerRefusedError('connect: x refused this client: not a quota connections: 8').quota).toBeUndefined();
    expect(new PeerRefusedError('connect: x refused this client: uid 5 is not allowed').quota).toBeUndefined();
    expect(new PeerRefusedError('quota connections: 8', { pid: 1, uid: 2, gid: 3 }).quota).toBeUndefined();
    // A multi-line daemon message keeps its name.
    expect(new PeerRefusedError('connect: x refused this client: quota fds: 8\nand more').quota).toBe('fds');
  });

  test('PeerRefusedError carries the refused listener only when the client refused it', () => {
    const peer = { pid: 5, uid: 65534, gid: 65534 };
    expect(new PeerRefusedError('refused', peer)).toMatchObject({ code: 'ERR_FDBRIDGE_REFUSED', peer });
    expect(new PeerRefusedError('refused').peer).toBeUndefined();
  });
});

describe('QuotaExceededError', () => {
  const names: QuotaName[] = ['connections', 'fds', 'calls', 'queuedBytes', 'helloTimeout', 'idleTimeout'];

  test('its message starts with "quota <name>:" whether or not it was given so', () => {
    const err = new QuotaExceededError('fds', 'more than 4 fds held');
    expect(err).toMatchObject({ code: 'ERR_FDBRIDGE_QUOTA', quota: 'fds', message: 'quota fds: more than 4 fds held' });
    expect(new QuotaExceededError('fds', 'quota fds: already').message).toBe('quota fds: already');
  });

  test.each(names)('round trip through its wire form: %s', (name) => {
    const sent = new QuotaExceededError(name, 'limit reached');
    const back = QuotaExceededError.fromMessage(sent.message);
    expect(back).toBeInstanceOf(QuotaExceededError);
    expect(back.quota).toBe(name);
    expect(back.message).toBe(sent.message);
  });

  test('a wire message with an unknown or no quota name is still a quota error (calls)', () => {
    expect(QuotaExceededError.fromMessage('quota bananas: too many').quota).toBe('calls');
    const bare = QuotaExceededError.fromMessage('too many');
    expect(bare.quota).toBe('calls');
    expect(bare.message).toBe('quota calls: too many');
    // The name is read only at the start.
    expect(QuotaExceededError.fromMessage('x quota fds: y').quota).toBe('calls');
  });
});

describe('describeError', () => {
  test('an Error: name, message, string code and stack', () => {
    const err = Object.assign(new RangeError('out'), { code: 'ERR_X' });
    expect(describeError(err)).toEqual({ name: 'RangeError', message: 'out', code: 'ERR_X', stack: err.stack });
  });

  test('stack: false leaves the stack out and keeps the rest', () => {
    const err = Object.assign(new RangeError('out'), { code: 'ERR_X', syscall: 'dup' });
    expect(describeError(err, { stack: false })).toEqual({ name: 'RangeError', message: 'out', code: 'ERR_X', syscall: 'dup' });
  });

  test('a code that is not a string, and a missing stack, are left out', () => {
    const err = Object.assign(new Error('e'), { code: 42 });
    err.stack = '';
    expect(describeError(err)).toEqual({ name: 'Error', message: 'e' });
  });

  test("a failed system call's name is kept, a syscall that is not a string left out", () => {
    const err = new SystemError(-constants.errno.EMFILE, 'recvmsg');
    expect(describeError(err)).toMatchObject({ name: 'SystemError', code: 'EMFILE', syscall: 'recvmsg' });
    expect(describeError(Object.assign(new Error('e'), { syscall: 7 }))).not.toHaveProperty('syscall');
  });

  test('an fdbridge error keeps its code and class name', () => {
    expect(describeError(new ClosedError('gone'))).toMatchObject({ name: 'ClosedError', code: 'ERR_FDBRIDGE_CLOSED' });
  });

  test('anything else thrown becomes an Error with its string form', () => {
    expect(describeError('boom')).toEqual({ name: 'Error', message: 'boom' });
    expect(describeError(undefined)).toEqual({ name: 'Error', message: 'undefined' });
    expect(describeError({ toString: () => 'obj' })).toEqual({ name: 'Error', message: 'obj' });
  });
});

describe('farSystemError', () => {
  test("a far side's SystemError becomes the same SystemError here, its call named (recvmsg when it does not say)", () => {
    const err = farSystemError('dupFileDescriptor', { name: 'SystemError', message: 'pidfd_getfd failed: EMFILE', code: 'EMFILE', syscall: 'pidfd_getfd' });
    expect(err).toBeInstanceOf(SystemError);
    expect(err).toMatchObject({
      code: 'EMFILE',
      errno: -constants.errno.EMFILE,
      syscall: 'pidfd_getfd',
      message: "dupFileDescriptor failed in the command's process: pidfd_getfd failed: EMFILE",
    });
    expect(farSystemError('dupFileDescriptors', { name: 'SystemError', message: 'm', code: 'EBADF' })).toMatchObject({ errno: -constants.errno.EBADF, syscall: 'recvmsg' });
  });

  test('anything else is not one: another class, no code, a code that is no errno', () => {
    expect(farSystemError('op', { name: 'Error', message: 'm', code: 'EMFILE' })).toBeUndefined();
    expect(farSystemError('op', { name: 'SystemError', message: 'm' })).toBeUndefined();
    expect(farSystemError('op', { name: 'SystemError', message: 'm', code: 'ERR_FDBRIDGE_QUOTA' })).toBeUndefined();
  });
});

/**
 * A copy of this library's errors module loaded in a vm context of its own
 * (another realm: its Error is not this one's), as the addon's errors are
 * when another realm loaded it last (native.init: each jest test file).
 */
function errorsInAnotherRealm(): { context: vm.Context; errors: typeof import('../../src/errors') } {
  const context = vm.createContext({ Buffer });
  const source = readFileSync(join(__dirname, '..', '..', 'dist', 'src', 'errors.js'), 'utf8');
  const load = vm.runInContext(`(function (exports, require, module) {${source}\n})`, context) as (e: object, r: (id: string) => unknown, m: object) => void;
  const module = { exports: vm.runInContext('({})', context) as object };
  load(module.exports, (id) => (id.startsWith('./') ? require(join(__dirname, '..', '..', 'dist', 'src', id)) : require(id)), module);
  return { context, errors: module.exports as typeof import('../../src/errors') };
}

describe('errors made in another realm', () => {
  const NAMES = ['Error', 'TypeError', 'RangeError', 'SyntaxError', 'ReferenceError', 'EvalError', 'URIError'] as const;

  test("generated: describeError tells an error of another realm (a vm context's own Error) as it tells one of this realm: name, message, code, syscall, stack", () => {
    const context = vm.createContext({});
    fc.assert(
      fc.property(
        fc.constantFrom(...NAMES),
        fc.string(),
        fc.option(fc.string(), { nil: undefined }),
        fc.option(fc.constantFrom('dup', 'recvmsg', 'sendmsg'), { nil: undefined }),
        fc.boolean(),
        (name, message, code, syscall, stack) => {
          const make = vm.runInContext('(name, message, code, syscall) => Object.assign(new globalThis[name](message), code === undefined ? {} : { code }, syscall === undefined ? {} : { syscall })', context) as (
            ...a: unknown[]
          ) => Error;
          const foreign = make(name, message, code, syscall);
          expect(foreign instanceof Error).toBe(false); // another realm's, as the test means
          const local = Object.assign(new globalThis[name](message), code === undefined ? {} : { code }, syscall === undefined ? {} : { syscall });
          const { stack: _foreignStack, ...far } = describeError(foreign, { stack });
          const { stack: _localStack, ...near } = describeError(local, { stack });
          expect(far).toEqual(near);
          expect(far).toMatchObject({ name, message });
          if (stack) expect(describeError(foreign).stack).toBe(foreign.stack);
        },
      ),
      { numRuns: 50 },
    );
  });

  test("generated: fdbridge's errors made by another realm's copy of the library: instanceof its class (serve.ts's TruncatedError test) and describeError keep their class, code and syscall", () => {
    const { errors } = errorsInAnotherRealm();
    fc.assert(
      fc.property(fc.constantFrom('control' as const, 'data' as const), fc.nat(253), fc.constantFrom(constants.errno.EBADF, constants.errno.EMFILE, constants.errno.EPIPE), (what, fdsClosed, errno) => {
        const truncated = new errors.TruncatedError(what, fdsClosed, 10);
        const system = new errors.SystemError(errno, 'sendmsg');
        expect(truncated instanceof Error).toBe(false);
        expect(truncated).toBeInstanceOf(TruncatedError);
        expect(truncated).toBeInstanceOf(FdBridgeError);
        expect(system).toBeInstanceOf(SystemError);
        expect(system).not.toBeInstanceOf(TruncatedError);
        expect(describeError(truncated, { stack: false })).toEqual({ name: 'TruncatedError', message: truncated.message, code: 'ERR_FDBRIDGE_TRUNCATED' });
        expect(describeError(system, { stack: false })).toEqual({ name: 'SystemError', message: system.message, code: errnoName(-errno), syscall: 'sendmsg' });
      }),
      { numRuns: 30 },
    );
  });

  test('isError: an error of any realm, nothing else', () => {
    const context = vm.createContext({});
    expect(isError(new Error('here'))).toBe(true);
    expect(isError(vm.runInContext('new TypeError("there")', context))).toBe(true);
    expect(isError(new (errorsInAnotherRealm().errors.ClosedError)('there'))).toBe(true);
    expect(isError(vm.runInContext('({ name: "Error", message: "m" })', context))).toBe(false);
    expect(isError({ name: 'Error', message: 'm', stack: '' })).toBe(false);
    expect(isError('boom')).toBe(false);
  });
});
