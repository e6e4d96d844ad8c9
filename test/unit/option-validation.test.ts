/**
 * Bad arguments are a TypeError or RangeError at once, naming the option,
 * before anything is made: the spawn options of the child and pidfd
 * transports (a uid of -1 reached libuv, which said EINVAL as an untyped
 * `spawn EINVAL`), and rawListen's backlog and mode (a negative backlog
 * was taken, and the kernel's own default used in its place). Generated
 * bad values; no fd and no process is left behind.
 */
import fc from 'fast-check';

import { closeFd, connect, openFdTable, PROBE_COMMAND } from '../../src';
import { rawListen } from '../../src/testing';
import { childrenOf, fdTableSettles } from '../util/processes';

/** A value that is not a uid or gid Node and the kernel take: the error it must give. */
const badId: fc.Arbitrary<{ value: unknown; error: 'TypeError' | 'RangeError' }> = fc.oneof(
  fc.integer({ min: -(2 ** 40), max: -1 }).map((value) => ({ value, error: 'RangeError' as const })),
  fc.integer({ min: 2 ** 31, max: 2 ** 40 }).map((value) => ({ value, error: 'RangeError' as const })),
  fc.double({ noInteger: true }).map((value) => ({ value, error: 'RangeError' as const })),
  fc.oneof(fc.string(), fc.boolean(), fc.constant(null), fc.array(fc.nat(), { maxLength: 2 }), fc.bigInt()).map((value) => ({ value, error: 'TypeError' as const })),
);

/** What options.child.env must be, as its errors say. */
const ENV = 'an object of environment variables, each a string or undefined (to remove it)';

/** `child` option shapes that are wrong, with the error they must give, the option it names and what it says the option must be. */
const badChild: fc.Arbitrary<{ child: unknown; error: string; names: string; says: string }> = fc.oneof(
  badId.map((b) => ({ child: { uid: b.value }, error: b.error, names: 'options.child.uid', says: 'an integer from 0 to 2147483647, not ' })),
  badId.map((b) => ({ child: { gid: b.value }, error: b.error, names: 'options.child.gid', says: 'an integer from 0 to 2147483647, not ' })),
  // Another user's uid without a gid would keep this process's group.
  fc
    .integer({ min: 0, max: 0x7fffffff })
    .filter((uid) => uid !== process.getuid?.())
    .map((uid) => ({
      child: { uid },
      error: 'TypeError',
      names: 'options.child.gid',
      says: `given with options.child.uid ${uid} (the user's group: without it the command runs with this process's gid ${process.getgid?.()}), not undefined`,
    })),
  fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.array(fc.nat(), { maxLength: 2 })).map((child) => ({ child, error: 'TypeError', names: 'options.child', says: 'an object ({ uid?, gid?, env? }), not ' })),
  fc.oneof(fc.string(), fc.integer(), fc.constant(null), fc.array(fc.string(), { maxLength: 2 })).map((env) => ({ child: { env }, error: 'TypeError', names: 'options.child.env', says: `${ENV}, not ` })),
  fc
    .oneof(
      fc.oneof(fc.integer(), fc.boolean(), fc.constant(null)).map((v) => ({ env: { FDBRIDGE_X: v }, says: `${ENV}, without NUL, not ` })),
      fc.string({ maxLength: 5 }).map((s) => ({ env: { A: `${s}\0` }, says: `${ENV}, without NUL, not ` })),
      fc.string({ maxLength: 5 }).map((s) => ({ env: { [`A${s}\0B`]: 'v' }, says: 'variable names without = or NUL, not ' })),
      fc.string({ maxLength: 5 }).map((s) => ({ env: { [`A${s}=B`]: 'v' }, says: 'variable names without = or NUL, not ' })),
      fc.constant({ env: { '': 'v' }, says: 'variable names without = or NUL, not ' }),
    )
    .map(({ env, says }) => ({ child: { env }, error: 'TypeError', names: 'options.child.env', says })),
  fc
    .constantFrom('cwd', 'shell', 'detached', 'argv0', 'stdio')
    .map((key) => ({ child: { [key]: 'x' }, error: 'TypeError', names: `options.child.${key}`, says: "left out: the command's process is spawned with uid, gid and env only, not " })),
);

/** What a promise came to: the error, or a description of the value it resolved with. */
async function outcome(p: Promise<{ close(): Promise<void> }>): Promise<unknown> {
  try {
    const conn = await p;
    await conn.close();
    return new Error('connected');
  } catch (e) {
    return e;
  }
}

describe('child and pidfd spawn options', () => {
  test.each(['child', 'pidfd'] as const)('%s: a bad uid, gid, env or unknown option is a TypeError or RangeError naming it; nothing spawned, no fd left', async (transport) => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(badChild, async ({ child, error, names, says }) => {
        const err = await outcome(connect(transport, { command: PROBE_COMMAND, child: child as never }));
        expect({ name: (err as Error).name, says: (err as Error).message.startsWith(`connect: ${names} must be ${says}`) }).toEqual({ name: error, says: true });
        expect(childrenOf(process.pid)).toEqual([]);
      }),
      { numRuns: 60 },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  });

  test('good values still pass: root may run the command as root; env variables set and removed', async () => {
    const conn = await connect('child', { command: PROBE_COMMAND, child: { uid: 0, gid: 0, env: { FDBRIDGE_SOME: 'x', FDBRIDGE_NONE: undefined } } });
    try {
      expect(await conn.call('echo', 1)).toBe(1);
    } finally {
      await conn.close();
    }
  });
});

describe('rawListen', () => {
  const name = (): string => `fdbridge-raw-listen-${process.pid}`;

  test('a backlog that is not an integer from 0 to 2^31 - 1, or a mode that is not -1 or 0 to 0o7777: TypeError or RangeError naming it, nothing bound', () => {
    const before = openFdTable();
    const badNumber = fc.oneof(
      fc.integer({ min: -(2 ** 40), max: -1 }).map((v) => ({ v, error: 'RangeError' })),
      fc.integer({ min: 2 ** 31, max: 2 ** 40 }).map((v) => ({ v, error: 'RangeError' })),
      fc.double({ noInteger: true }).map((v) => ({ v, error: 'RangeError' })),
      fc.oneof(fc.string(), fc.boolean(), fc.constant(null), fc.bigInt()).map((v) => ({ v, error: 'TypeError' })),
    );
    fc.assert(
      fc.property(
        fc.oneof(
          badNumber.map((b) => ({ options: { backlog: b.v }, error: b.error, names: 'options.backlog' })),
          badNumber
            .filter((b) => b.v !== -1)
            .map((b) => ({ options: { mode: b.v }, error: b.error, names: 'options.mode' })),
          fc.integer({ min: 0o10000, max: 2 ** 31 - 1 }).map((v) => ({ options: { mode: v }, error: 'RangeError', names: 'options.mode' })),
        ),
        ({ options, error, names }) => {
          let err: unknown;
          try {
            closeFd(rawListen('seqpacket', name(), { abstract: true, ...(options as object) }));
          } catch (e) {
            err = e;
          }
          expect({ name: (err as Error | undefined)?.name, names: (err as Error | undefined)?.message.startsWith(`rawListen: ${names} `) }).toEqual({ name: error, names: true });
        },
      ),
      { numRuns: 100 },
    );
    expect(openFdTable()).toEqual(before);
  });

  test('good values pass: backlog 0 and 2^31 - 1, mode -1 and 0o600', () => {
    for (const options of [{ backlog: 0 }, { backlog: 2 ** 31 - 1 }, { mode: -1 }, { backlog: 4, mode: 0o600 }]) {
      closeFd(rawListen('seqpacket', name(), { abstract: true, ...options }));
    }
  });
});
