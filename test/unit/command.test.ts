/**
 * Command specs, loading and hosting: what a spec may look like (TypeError at
 * once otherwise), what each transport sends or loads for it, and the host's
 * promises: an fd is adopted at most once, close() runs the command's close
 * once and closes every fd it did not adopt, even when that close throws.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { threadId } from 'node:worker_threads';

import fc from 'fast-check';

import {
  COMMAND_NAME,
  CommandHost,
  commandRequest,
  loadCommandClass,
  normalizeCommandSpec,
  SetLedger,
  type CommandSpec,
  type FdLedger,
} from '../../src/command';
import { LOG_COMMAND } from '../../src/commands/log-command';
import { PROBE_COMMAND } from '../../src/commands/probe-command';
import { connect, SystemError } from '../../src';
import { closeFd, closeFds, dupFd, fdIdentity, fileAt, makeMemfd, openFdTable, sameFile } from '../../src/fd';
import { ownedFdCount } from '../../src/test-hooks';
import { closes } from '../fixtures/recording-command';
import { openAt } from '../util/open-at';

const FIXTURE = join(__dirname, '..', 'fixtures', 'recording-command.ts');

function isOpen(fd: number): boolean {
  return openFdTable().has(fd);
}

/** A copy of `file` at `fd` (a free number), put there by fdbridge's native dup: a new install at the number. The copies it made on the way (lower free numbers) are closed. */
function dupAt(file: number, fd: number): number {
  const below: number[] = [];
  try {
    for (;;) {
      const copy = dupFd(file);
      if (copy === fd) return copy;
      if (copy > fd) {
        closeFd(copy);
        throw new Error(`dupAt: fd ${fd} is not free`);
      }
      below.push(copy);
    }
  } finally {
    closeFds(below);
  }
}

/** A helper command's host whose closeClientFds close and SetLedger's `closing` only note what they are given, in `seen`. */
function recordingHost(): { seen: string[]; ledger: SetLedger; host: CommandHost } {
  const seen: string[] = [];
  const close = (list: readonly number[]): Promise<void> => {
    seen.push(`closed ${list.join(',')}`);
    return Promise.resolve();
  };
  const ledger = Object.assign(new SetLedger(), { closing: (list: readonly number[]) => seen.push(`closing ${list.join(',')}`) });
  return { seen, ledger, host: new CommandHost({ module: FIXTURE }, 'helper', ledger, undefined, close) };
}

describe('spec shape (both normalizeCommandSpec and commandRequest)', () => {
  // Each with the part of the spec its TypeError names, so the caller knows what to fix.
  const bad: Array<[string, unknown, string]> = [
    ['null', null, 'options.command must be { name?: string, module?: string, export?: string, args?: unknown[] }'],
    ['a string', 'log', 'options.command must be {'],
    ['a name that is a path', { name: '../etc/x' }, 'options.command.name must match'],
    ['a name with a slash', { name: 'a/b' }, 'not "a/b"'],
    ['an empty name', { name: '' }, 'options.command.name must match'],
    ['a name starting with a dot', { name: '.hidden' }, 'options.command.name must match'],
    ['a name of 65 characters', { name: 'a'.repeat(65) }, 'options.command.name must match'],
    ['a name with a space', { name: 'a b' }, 'options.command.name must match'],
    ['a name that is not a string', { name: 5 }, 'options.command.name must match'],
    ['an empty module', { name: 'log', module: '' }, 'options.command.module must be a non-empty string'],
    ['a module that is not a string', { name: 'log', module: 5 }, 'options.command.module must be a non-empty string'],
    ['an export that is not a string', { name: 'log', export: 5 }, 'options.command.export must be a string'],
    ['args that are not an array', { name: 'log', args: 'x' }, 'options.command.args must be an array'],
  ];

  test.each(bad)('%s is a TypeError naming what is wrong', (_what, spec, names) => {
    for (const f of [normalizeCommandSpec, commandRequest]) {
      let err: unknown;
      try {
        f(spec as CommandSpec);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(TypeError);
      expect((err as Error).message).toContain(names);
    }
  });

  test('every part given well passes, each alone and all together', () => {
    for (const spec of [{ name: 'log' }, { name: 'log', module: FIXTURE }, { name: 'log', export: 'X' }, { name: 'log', args: [] }, { name: 'log', module: FIXTURE, export: 'X', args: [1] }]) {
      expect(() => commandRequest(spec)).not.toThrow();
      expect(() => normalizeCommandSpec(spec)).not.toThrow();
    }
  });

  test('names: 1 to 64 characters of letters, digits, dot, dash, underscore, not starting with punctuation', () => {
    for (const name of ['a', 'A9', 'my-command_v1.2', 'a'.repeat(64), '0x']) {
      expect(COMMAND_NAME.test(name)).toBe(true);
      expect(commandRequest({ name })).toEqual({ name });
    }
    for (const name of ['-a', '_a', 'a\n', 'é']) expect(COMMAND_NAME.test(name)).toBe(false);
  });
});

describe('normalizeCommandSpec (what a transport in the caller\'s process loads)', () => {
  test('an absolute module: kept, export defaults to "default", no name or args invented', () => {
    expect(normalizeCommandSpec({ module: FIXTURE })).toEqual({ module: FIXTURE, export: 'default' });
  });

  test('a relative module is resolved against the cwd; a package name is left to require', () => {
    expect(normalizeCommandSpec({ module: './x/y.js' }).module).toBe(resolve('./x/y.js'));
    expect(normalizeCommandSpec({ module: '../y.js' }).module).toBe(resolve('../y.js'));
    expect(normalizeCommandSpec({ module: 'some-package' }).module).toBe('some-package');
  });

  test('name, export and args given are kept', () => {
    const spec = { name: 'mine', module: FIXTURE, export: 'PlainCommand', args: [1, 'two'] };
    expect(normalizeCommandSpec(spec)).toEqual(spec);
  });

  test('a built-in name alone is its built-in module (log, and the diagnostic probe)', () => {
    expect(normalizeCommandSpec({ name: 'log' })).toEqual({ name: 'log', module: LOG_COMMAND.module, export: LOG_COMMAND.export });
    expect(normalizeCommandSpec({ name: 'probe' })).toEqual({
      name: 'probe',
      module: PROBE_COMMAND.module,
      export: PROBE_COMMAND.export,
    });
    expect(normalizeCommandSpec({ name: 'log', args: ['x'] })).toEqual({ ...LOG_COMMAND, args: ['x'] });
  });

  test('a name that is not built in, with no module, or neither: TypeError naming the way out', () => {
    expect(() => normalizeCommandSpec({ name: 'mine' })).toThrow(/"mine" is not a built-in command \(log\); give its module/);
    expect(() => normalizeCommandSpec({ name: 'constructor' })).toThrow(TypeError);
    expect(() => normalizeCommandSpec({ name: 'hasOwnProperty' })).toThrow(TypeError);
    expect(() => normalizeCommandSpec({})).toThrow(/needs a module/);
  });
});

describe('commandRequest (what a helper client sends)', () => {
  test('the name and args, never a module or export', () => {
    expect(commandRequest({ name: 'mine', module: FIXTURE, export: 'X', args: [1] })).toEqual({ name: 'mine', args: [1] });
    expect(commandRequest({ name: 'mine', module: FIXTURE })).toEqual({ name: 'mine' });
  });

  test('no name: TypeError saying why a name is needed (a daemon runs only commands it was started with) and how to give one', () => {
    for (const spec of [{ module: FIXTURE }, { module: FIXTURE, export: 'PlainCommand', args: [1] }, {}]) {
      let err: unknown;
      try {
        commandRequest(spec);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(TypeError);
      // Why: a module given to a daemon is not run; what to do: name one it serves.
      expect((err as Error).message).toMatch(/^options\.command: a helper daemon runs only the commands it was started with, named: give the command's name /);
      expect((err as Error).message).toMatch(/LOG_COMMAND.*--command NAME=MODULE/);
    }
  });
});

describe('loadCommandClass', () => {
  test('the default export, or the export named', async () => {
    const Default = loadCommandClass({ module: FIXTURE });
    expect(Default.name).toBe('RecordingCommand');
    expect(loadCommandClass({ module: FIXTURE, export: 'PlainCommand' }).name).toBe('PlainCommand');
  });

  test('a module path relative to the cwd is found from the cwd', () => {
    const rel = './' + join('test', 'fixtures', 'recording-command.ts');
    expect(process.cwd()).toBe(resolve(__dirname, '..', '..'));
    expect(loadCommandClass({ module: rel }).name).toBe('RecordingCommand');
  });

  test('no module: TypeError naming the command', () => {
    expect(() => loadCommandClass({ name: 'mine' })).toThrow(new TypeError('command mine has no module to load'));
    expect(() => loadCommandClass({})).toThrow(new TypeError('command (unnamed) has no module to load'));
  });

  test('a module that cannot be loaded: an Error naming it, with the loader\'s error as cause', () => {
    let err: unknown;
    try {
      loadCommandClass({ module: join(__dirname, 'no-such-module.js') });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^cannot load command module .*no-such-module\.js: /);
    expect((err as Error).cause).toMatchObject({ code: 'MODULE_NOT_FOUND' });
  });

  test('an export that is missing or not a class: TypeError', () => {
    expect(() => loadCommandClass({ module: FIXTURE, export: 'Nothing' })).toThrow(
      new TypeError(`command module ${FIXTURE} has no class export named "Nothing"`),
    );
    expect(() => loadCommandClass({ module: FIXTURE, export: 'notAClass' })).toThrow(TypeError);
  });
});

describe('SetLedger', () => {
  test('adopt once; sweep closes the rest (on the background closer) and counts them', async () => {
    const ledger = new SetLedger();
    const [a, b, c] = [makeMemfd(), makeMemfd(), makeMemfd()];
    ledger.add(a);
    ledger.add(b);
    ledger.add(c);
    expect(ledger.size).toBe(3);
    expect(ledger.adopt(b)).toBe(true);
    expect(ledger.adopt(b)).toBe(false);
    expect(ledger.adopt(999)).toBe(false);
    expect(ledger.size).toBe(2);
    expect(ledger.sweep()).toBe(2);
    await ledger.swept();
    expect(isOpen(a)).toBe(false);
    expect(isOpen(c)).toBe(false);
    expect(isOpen(b)).toBe(true);
    expect(ledger.size).toBe(0);
    expect(ledger.sweep()).toBe(0);
    closeFd(b);
  });
});

describe('CommandHost', () => {
  test('the context says where the command runs, is frozen, and the constructor gets the args', () => {
    const host = new CommandHost({ module: FIXTURE, args: ['a', 2] }, 'child');
    expect(host.context).toMatchObject({ transport: 'child', pid: process.pid, threadId });
    expect(Object.isFrozen(host.context)).toBe(true);
    expect(host.command['args']).toEqual(['a', 2]);
    expect(host.command['context']).toBe(host.context);
    expect(new CommandHost({ module: FIXTURE }, 'direct').command['args']).toEqual([]);
  });

  test('the client\'s credentials, where given, are a frozen copy of pid, uid and gid alone; none given: no peer at all', async () => {
    const given = { pid: 10, uid: 20, gid: 30, extra: 'x' };
    const host = new CommandHost({ module: FIXTURE }, 'helper', undefined, given);
    expect(host.context.peer).toEqual({ pid: 10, uid: 20, gid: 30 });
    expect(Object.isFrozen(host.context.peer)).toBe(true);
    // A copy: what the caller does with its object later does not reach the command.
    given.uid = 0;
    expect(host.context.peer?.uid).toBe(20);
    const none = new CommandHost({ module: FIXTURE }, 'direct');
    expect('peer' in none.context).toBe(false);
    await host.close();
    await none.close();
  });

  test('closeClientFds: closes the fds on the background closer by default (resolved once they are), or with the one the host was given; a ledger that counts adopted fds is told once they have gone to it', async () => {
    const before = openFdTable();
    const ledger0 = new SetLedger();
    const host = new CommandHost({ module: FIXTURE }, 'direct', ledger0);
    const fds = [makeMemfd(), makeMemfd()];
    for (const fd of fds) ledger0.add(fd);
    for (const fd of fds) host.context.adoptFd(fd);
    await expect(host.context.closeClientFds(fds)).resolves.toBeUndefined();
    expect(fds.filter(isOpen)).toEqual([]);
    await host.close();
    const seen: string[] = [];
    const closeClientFds = (list: readonly number[]): Promise<void> => {
      seen.push(`closed ${list.join(',')}`);
      return Promise.resolve();
    };
    const ledger = new SetLedger();
    const counting = Object.assign(ledger, { closing: (list: readonly number[]) => seen.push(`closing ${list.join(',')}`) });
    const helperHost = new CommandHost({ module: FIXTURE }, 'helper', counting, undefined, closeClientFds);
    const adopted = [makeMemfd(), makeMemfd()];
    for (const fd of adopted) ledger.add(fd);
    for (const fd of adopted) helperHost.context.adoptFd(fd);
    await expect(helperHost.context.closeClientFds(adopted)).resolves.toBeUndefined();
    expect(seen).toEqual([`closed ${adopted.join(',')}`, `closing ${adopted.join(',')}`]);
    // The host's close only said it closed them.
    closeFds(adopted);
    await helperHost.close();
    expect(openFdTable()).toEqual(before);
  });

  test('generated: holdLogBytes outside a helper daemon limits nothing: any counts are taken, each given back by calling the function it returned, in any order', async () => {
    for (const transport of ['direct', 'worker', 'child', 'pidfd'] as const) {
      const host = new CommandHost({ module: FIXTURE }, transport);
      try {
        fc.assert(
          fc.property(fc.array(fc.nat(), { maxLength: 20 }), fc.func(fc.integer()), (counts, order) => {
            const giveBacks = counts.map((bytes) => host.context.holdLogBytes(bytes));
            giveBacks.sort((a, b) => order(a) - order(b));
            for (const giveBack of giveBacks) expect(giveBack()).toBeUndefined();
          }),
          { numRuns: 50 },
        );
      } finally {
        await host.close();
      }
    }
  });

  test('generated: a closeClientFds whose close throws at once leaves the ledger counting the fds it named (they are still open), and throws that', async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(fc.nat(8), fc.string(), async (count, reason) => {
        const seen: string[] = [];
        const refused = new TypeError(reason);
        const throwing = (): Promise<void> => {
          throw refused;
        };
        const ledger = Object.assign(new SetLedger(), { closing: (list: readonly number[]) => seen.push(`closing ${list.join(',')}`) });
        const host = new CommandHost({ module: FIXTURE }, 'helper', ledger, undefined, throwing);
        const fds = Array.from({ length: count }, () => makeMemfd());
        try {
          for (const fd of fds) ledger.add(fd);
          for (const fd of fds) host.context.adoptFd(fd);
          expect(() => host.context.closeClientFds(fds)).toThrow(refused);
          expect(seen).toEqual([]);
          // Still the command's: a second try reaches the close again.
          expect(() => host.context.closeClientFds(fds)).toThrow(refused);
          expect(fds.filter(isOpen)).toEqual(fds);
        } finally {
          closeFds(fds);
          await host.close();
        }
      }),
      { numRuns: 50 },
    );
    expect(openFdTable()).toEqual(before);
  });

  test('generated: closeClientFds of a list naming one fd twice, or holding an entry that is no fd number, is a TypeError naming it: nothing reaches the close, the ledger is not told', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.nat(1000), { minLength: 1, maxLength: 8 }),
        fc.nat(),
        fc.nat(),
        fc.oneof(fc.constant(undefined), fc.constantFrom(-1, 1.5, NaN, 2 ** 31, '3' as unknown as number)),
        async (fds, pick, at, bad) => {
          const { seen, host } = recordingHost();
          try {
            const list: number[] = [...fds];
            const i = at % (list.length + 1);
            if (bad === undefined) {
              const again = fds[pick % fds.length] as number;
              list.splice(i, 0, again);
              expect(() => host.context.closeClientFds(list)).toThrow(TypeError);
              expect(() => host.context.closeClientFds(list)).toThrow(`is fd ${again} again`);
            } else {
              list.splice(i, 0, bad);
              expect(() => host.context.closeClientFds(list)).toThrow(TypeError);
              expect(() => host.context.closeClientFds(list)).toThrow(`fds[${i}] must be a non-negative integer`);
            }
            expect(seen).toEqual([]);
          } finally {
            await host.close();
          }
        },
      ),
      { numRuns: 100 },
    );
  });

  test('adoptFd: an adopted fd is the command\'s, no longer refused as one fdbridge holds for itself, so it can be passed on', async () => {
    const before = openFdTable();
    // The direct transport puts into the context a copy registered as fdbridge's own, as every transport does.
    const conn = await connect('direct', { command: { module: FIXTURE } });
    const memfd = makeMemfd();
    try {
      const given = await conn.dupFileDescriptor(memfd);
      await expect(conn.dupFileDescriptor(given)).rejects.toMatchObject({ code: 'EBADF' });
      const owned = ownedFdCount();
      expect(await conn.call('adopt', given)).toBe(given);
      expect(ownedFdCount()).toBe(owned - 1);
      // Adopted, it is a number like any the caller holds: it goes on through a connection.
      const again = await conn.dupFileDescriptor(given);
      expect(sameFile(again, memfd)).toBe(true);
      closeFds([given]);
    } finally {
      await conn.close();
      closeFds([memfd]);
    }
    expect(openFdTable()).toEqual(before);
  });

  test('adoptFd(0): 0 is an fd, so an fd not given (an Error), not a bad number', async () => {
    const host = new CommandHost({ module: FIXTURE }, 'direct');
    expect(() => host.context.adoptFd(0)).toThrow(/adoptFd\(0\): this fd was not duplicated into this command/);
    expect(() => host.context.adoptFd(0)).not.toThrow(RangeError);
    await host.close();
    expect(isOpen(0)).toBe(true);
  });

  test('adoptFd: takes a given fd once; a bad number is a RangeError, an fd not given an Error', async () => {
    const host = new CommandHost({ module: FIXTURE }, 'direct');
    const fd = makeMemfd();
    host.ledger.add(fd);
    expect(() => host.context.adoptFd(-1)).toThrow(RangeError);
    expect(() => host.context.adoptFd(1.5)).toThrow(RangeError);
    expect(await host.call('adopt', [fd])).toBe(fd);
    expect(host.ledger.size).toBe(0);
    expect(() => host.context.adoptFd(fd)).toThrow(/was not duplicated into this command, or was adopted already/);
    expect(() => host.context.adoptFd(fd)).not.toThrow(RangeError);
    await host.close();
    // Adopted: the command's to close, not the host's.
    expect(isOpen(fd)).toBe(true);
    closeFd(fd);
  });

  test('adoptFd of a value that is no fd number: a RangeError naming the value, and the given fds stay the connection\'s to close', async () => {
    const before = openFdTable();
    const host = new CommandHost({ module: FIXTURE }, 'direct');
    const fd = makeMemfd();
    host.ledger.add(fd);
    for (const bad of [-1, 1.5, Number.NaN, fd + 0.5]) {
      expect(() => host.context.adoptFd(bad)).toThrow(new RangeError(`adoptFd: fd must be an integer from 0 to 2147483647, not ${bad}`));
    }
    // Nothing was taken: the fd given is still owned by the connection, which closes it.
    expect(host.ledger.size).toBe(1);
    await host.close();
    expect(isOpen(fd)).toBe(false);
    expect(openFdTable()).toEqual(before);
  });

  test('call: runs the method on the command (this bound), sync or async, with a copy of the args', async () => {
    const host = new CommandHost({ module: FIXTURE }, 'direct');
    const args = [1, 'b'];
    const echoed = (await host.call('echo', args)) as unknown[];
    expect(echoed).toEqual([1, 'b']);
    expect(echoed).not.toBe(args);
    expect(await host.call('later', ['x'])).toBe('x');
    expect(await host.call('whoAmI', [])).toBe(host.command);
    await host.close();
  });

  test('call: close, constructor, Object.prototype names, missing names and non-methods are TypeErrors', async () => {
    const host = new CommandHost({ module: FIXTURE, args: ['not-closed'] }, 'direct');
    for (const method of ['close', 'constructor', 'toString', 'hasOwnProperty', '__proto__', 'valueOf', 'missing', 'notAMethod']) {
      await expect(host.call(method, [])).rejects.toThrow(TypeError);
    }
    await expect(host.call(Symbol('x') as unknown as string, [])).rejects.toThrow(/is not a command method that can be called/);
    await expect(host.call(7 as unknown as string, [])).rejects.toThrow(/is not a command method that can be called/);
    await expect(host.call('missing', [])).rejects.toThrow('the command has no method named "missing"');
    // A refused close did not run the command's close().
    expect(closes).not.toContain('not-closed');
    await host.close();
  });

  test('close: runs the command\'s close() once, then closes every fd it did not adopt', async () => {
    const host = new CommandHost({ module: FIXTURE, args: ['once'] }, 'worker');
    const [kept, left] = [makeMemfd(), makeMemfd()];
    host.ledger.add(kept);
    host.ledger.add(left);
    host.context.adoptFd(kept);
    await host.close();
    await host.close();
    expect(closes.filter((c) => c === 'once')).toHaveLength(1);
    expect(isOpen(left)).toBe(false);
    expect(isOpen(kept)).toBe(true);
    closeFds([kept]);
  });

  test('close: a command close() that throws still has the fds closed, and the error reaches the caller', async () => {
    const host = new CommandHost({ module: FIXTURE, args: ['fail-close'] }, 'direct');
    const fd = makeMemfd();
    host.ledger.add(fd);
    await expect(host.close()).rejects.toThrow('close failed in the command');
    expect(isOpen(fd)).toBe(false);
    // Closed is closed: not run again.
    await expect(host.close()).resolves.toBeUndefined();
    expect(closes.filter((c) => c === 'fail-close')).toHaveLength(1);
  });

  test('close: a command without close() just has its fds closed', async () => {
    const host = new CommandHost({ module: FIXTURE, export: 'PlainCommand' }, 'direct');
    const fd = makeMemfd();
    host.ledger.add(fd);
    expect(await host.call('ping', [])).toBe('pong');
    await host.close();
    expect(isOpen(fd)).toBe(false);
  });
});

describe("CommandHost.closeClientFds: the list, the default close, what only the ledger knows", () => {
  test('generated: a list that is not an array (null, undefined, a number, a string, an array-like, a typed array of adopted fds): a TypeError naming what it is; nothing closed, the close not called, the ledger not told', async () => {
    const { seen, ledger, host } = recordingHost();
    const fds = [makeMemfd(), makeMemfd()];
    try {
      for (const fd of fds) ledger.add(fd);
      for (const fd of fds) host.context.adoptFd(fd);
      fc.assert(
        fc.property(
          fc.constantFrom<unknown>(null, undefined, fds[0], String(fds[0]), { length: 2, 0: fds[0], 1: fds[1] }, Int32Array.from(fds), new Set(fds)),
          (bad) => {
            const what = bad === null ? 'null' : typeof bad;
            expect(() => host.context.closeClientFds(bad as number[])).toThrow(new TypeError(`closeClientFds(fds): fds must be an array of fd numbers, not ${what}`));
            expect(seen).toEqual([]);
            expect(fds.filter(isOpen)).toEqual(fds);
          },
        ),
      );
      // A repeated fd: a TypeError naming the method and the entry, nothing closed.
      expect(() => host.context.closeClientFds([fds[0]!, fds[0]!])).toThrow(new RegExp(`^closeClientFds: fds\\[1\\] is fd ${fds[0]} again`));
      expect(seen).toEqual([]);
      // Still the command's: the same fds as an array reach the close.
      await host.context.closeClientFds(fds);
      expect(seen).toEqual([`closed ${fds.join(',')}`, `closing ${fds.join(',')}`]);
    } finally {
      closeFds(fds);
      await host.close();
    }
  });

  test("the default close with a ledger that keeps no files and counts nothing (a child or pidfd command's, the channel's: no clientFiles, no closing): the adopted fds are closed, then no longer the command's", async () => {
    const before = openFdTable();
    const given = new Set<number>();
    const ledger: FdLedger = {
      add: (fd) => void given.add(fd),
      adopt: (fd) => given.delete(fd),
      sweep: () => {
        const n = given.size;
        closeFds([...given]);
        given.clear();
        return n;
      },
      swept: () => Promise.resolve(),
      get size() {
        return given.size;
      },
    };
    const host = new CommandHost({ module: FIXTURE }, 'child', ledger);
    const fds = [makeMemfd(), makeMemfd(), makeMemfd()];
    for (const fd of fds) ledger.add(fd);
    for (const fd of fds.slice(0, 2)) host.context.adoptFd(fd);
    await expect(host.context.closeClientFds(fds.slice(0, 2))).resolves.toBeUndefined();
    expect(fds.filter(isOpen)).toEqual([fds[2]]);
    // Taken by the close: named again, refused, nothing closed.
    expect(() => host.context.closeClientFds(fds.slice(0, 1))).toThrow(expect.objectContaining({ code: 'EBADF' }) as unknown as Error);
    // The one given and not adopted is the host's: its close closes it.
    await host.close();
    expect(openFdTable()).toEqual(before);
  });

  test('SetLedger: a number the command adopted, closed itself, and that was given to it again (the same file, at the same number, not adopted): closeClientFds refuses it with EBADF and closes nothing; the host closes it as the given fd it is', async () => {
    const before = openFdTable();
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-command-given-again-'));
    try {
      const path = join(dir, 'file');
      writeFileSync(path, 'given');
      const ledger = new SetLedger();
      const host = new CommandHost({ module: FIXTURE }, 'remote', ledger);
      const fd = openSync(path, 'r');
      ledger.add(fd);
      host.context.adoptFd(fd);
      // The command closes its adopted fd itself; the same file is given again at the number.
      closeSync(fd);
      expect(openAt(path, fd)).toBe(fd);
      ledger.add(fd);
      let refused: unknown;
      try {
        void host.context.closeClientFds([fd]);
      } catch (err) {
        refused = err;
      }
      expect(refused).toBeInstanceOf(SystemError);
      expect({ code: (refused as SystemError).code, syscall: (refused as SystemError).syscall }).toEqual({ code: 'EBADF', syscall: 'closeClientFds' });
      expect((refused as SystemError).message).toContain(`fd ${fd} is not the client's to close: it is a copy given to the command and not adopted`);
      expect(isOpen(fd)).toBe(true);
      expect(ledger.size).toBe(1);
      await host.close();
      expect(isOpen(fd)).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(openFdTable()).toEqual(before);
  });

  test("refusals close nothing of the list and say why: a number never held, one closed through closeClientFds already, one the command closed itself (its number free, then another file there)", async () => {
    const before = openFdTable();
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-command-refusals-'));
    const ledger = new SetLedger();
    const host = new CommandHost({ module: FIXTURE }, 'direct', ledger);
    const stranger = makeMemfd();
    let other: number | undefined;
    try {
      const path = join(dir, 'other');
      writeFileSync(path, 'another file');
      const [kept, taken, closedItself] = [makeMemfd(), makeMemfd(), makeMemfd()] as [number, number, number];
      for (const fd of [kept, taken, closedItself]) {
        ledger.add(fd);
        host.context.adoptFd(fd);
      }
      await expect(host.context.closeClientFds([taken])).resolves.toBeUndefined();
      expect(isOpen(taken)).toBe(false);
      // The command closes one of its adopted fds itself.
      closeSync(closedItself);
      /** What closeClientFds of `kept` and `fd` throws, the files at both numbers as they were after. */
      const refusalOf = (fd: number): { code: string; syscall: string; names: boolean; why: string } => {
        const files = [kept, fd].map((n) => (isOpen(n) ? fdIdentity(n) : undefined));
        let thrown: unknown;
        try {
          void host.context.closeClientFds([kept, fd]);
        } catch (err) {
          thrown = err;
        }
        expect(thrown).toBeInstanceOf(SystemError);
        expect([kept, fd].map((n) => (isOpen(n) ? fdIdentity(n) : undefined))).toEqual(files);
        const { code, syscall, message } = thrown as SystemError;
        return { code, syscall, names: message.startsWith(`closeClientFds: fd ${fd} is not the client's to close: `), why: message.replace(/^.*?: .*?: /, '') };
      };
      const notHeld = "the command did not adopt it from its connection nor receive it on a socket of its own, or closed it through closeClientFds already; nothing was closed";
      const notItsFile = 'its number no longer holds the file the command got with it (the command closed it itself); nothing was closed';
      expect(refusalOf(stranger)).toEqual({ code: 'EBADF', syscall: 'closeClientFds', names: true, why: notHeld });
      expect(refusalOf(taken)).toEqual({ code: 'EBADF', syscall: 'closeClientFds', names: true, why: notHeld });
      expect(refusalOf(closedItself)).toEqual({ code: 'EBADF', syscall: 'closeClientFds', names: true, why: notItsFile });
      other = openAt(path, closedItself);
      expect(other).toBe(closedItself);
      expect(refusalOf(closedItself)).toEqual({ code: 'EBADF', syscall: 'closeClientFds', names: true, why: notItsFile });
      // The one still held closes.
      await expect(host.context.closeClientFds([kept])).resolves.toBeUndefined();
      expect(isOpen(kept)).toBe(false);
      expect(isOpen(closedItself)).toBe(true);
    } finally {
      if (other !== undefined) closeSync(other);
      closeFds([stranger]);
      await host.close();
      rmSync(dir, { recursive: true, force: true });
    }
    expect(openFdTable()).toEqual(before);
  });

  test('generated: a refusal carries the entry it refused, its number as `fd` and its place in the list as `index`, whichever check refused it (a number never held, one closed through closeClientFds already, one the command closed itself, another file there since, the same file given again, or put there again by fdbridge: another install); nothing of the list is closed', async () => {
    const kinds = ['never held', 'closed through closeClientFds', 'closed itself', 'another file there', 'given again', 'another install'] as const;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...kinds), fc.nat(4), fc.nat(), async (kind, heldCount, at) => {
        const file = makeMemfd('refused-entry');
        const ledger = new SetLedger();
        const host = new CommandHost({ module: FIXTURE }, 'direct', ledger);
        const adopt = (fd: number): number => {
          ledger.add(fd);
          return host.context.adoptFd(fd);
        };
        const held = Array.from({ length: heldCount }, () => adopt(dupFd(file)));
        const left: number[] = [];
        // Opened before the number is freed, so that it is not the file the number gets.
        const other = kind === 'another file there' ? makeMemfd('refused-entry-other') : undefined;
        try {
          const refused = dupFd(file);
          if (kind === 'never held') left.push(refused);
          else adopt(refused);
          if (kind === 'closed through closeClientFds') await host.context.closeClientFds([refused]);
          if (kind !== 'never held' && kind !== 'closed through closeClientFds') closeFd(refused);
          if (other !== undefined) left.push(dupAt(other, refused));
          // Given again it is the ledger's, which the host's close closes.
          if (kind === 'given again') ledger.add(dupAt(file, refused));
          if (kind === 'another install') left.push(dupAt(file, refused));
          const index = at % (held.length + 1);
          const list = [...held];
          list.splice(index, 0, refused);
          const files = list.map((fd) => fileAt(fd));
          let thrown: unknown;
          try {
            void host.context.closeClientFds(list);
          } catch (err) {
            thrown = err;
          }
          expect(thrown).toBeInstanceOf(SystemError);
          const { code, syscall, fd, index: entry } = thrown as SystemError;
          expect({ kind, code, syscall, fd, index: entry }).toEqual({ kind, code: 'EBADF', syscall: 'closeClientFds', fd: refused, index });
          expect(list.map((fd) => fileAt(fd))).toEqual(files);
          await expect(host.context.closeClientFds(held)).resolves.toBeUndefined();
        } finally {
          closeFds(left);
          if (other !== undefined) closeFd(other);
          await host.close();
          closeFd(file);
        }
      }),
      { numRuns: 100 },
    );
  });
});
