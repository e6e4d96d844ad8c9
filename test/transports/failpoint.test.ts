/**
 * FDBRIDGE_FAILPOINT: parsing, counting, and the variable reaching a command
 * process through ConnectOptions.child.env (and a helper daemon through its
 * environment), where it kills that process at the chosen step.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, makeMemfd, PeerExitedError, PROBE_COMMAND } from '../../src';
import { closeFd } from '../../src/fd';
import { Failpoint, failpointFromEnv, FAILPOINT_ENV, FAILPOINT_NAMES, parseFailpoint } from '../../src/failpoint';
import { CLI } from '../util/processes';

const RUNS = { seed: 20261204, numRuns: 200 };

describe('parseFailpoint', () => {
  test.each([
    ['after-receive', { point: 'after-receive', hit: 1 }],
    ['after-receive:1', { point: 'after-receive', hit: 1 }],
    ['after-receive:2', { point: 'after-receive', hit: 2 }],
    [' on-close ', { point: 'on-close', hit: 1 }],
    ['on-close:3', { point: 'on-close', hit: 3 }],
  ])('%j', (text, spec) => {
    expect(parseFailpoint(text)).toEqual(spec);
  });

  test.each(['', 'after', 'after-receive:0', 'after-receive:-1', 'after-receive:x', 'after-receive:', 'after-receive:1:2', 'AFTER-RECEIVE', 'after-receive:1.5', 'after-receive:99999999999999999999'])(
    'rejects %j with a RangeError naming the accepted forms',
    (text) => {
      expect(() => parseFailpoint(text)).toThrow(RangeError);
      expect(() => parseFailpoint(text)).toThrow(/FDBRIDGE_FAILPOINT=.*<point>\[:N\].*after-receive, on-close/);
    },
  );

  test('generated: <point>[:N] with any N from 1 to MAX_SAFE_INTEGER, blanks around it taken off; anything before the point refused', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...FAILPOINT_NAMES),
        fc.option(fc.oneof(fc.integer({ min: 1, max: 999 }), fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })), { nil: undefined }),
        fc.stringMatching(/^[ \t\n]*$/),
        fc.stringMatching(/^[ \t\n]*$/),
        fc.stringMatching(/^[^a-z\-\s]+$/),
        (point, hit, before, after, junk) => {
          const text = hit === undefined ? point : `${point}:${hit}`;
          expect(parseFailpoint(`${before}${text}${after}`)).toEqual({ point, hit: hit ?? 1 });
          expect(() => parseFailpoint(`${junk}${text}`)).toThrow(RangeError);
        },
      ),
      RUNS,
    );
  });
});

describe('Failpoint', () => {
  test('fires once, at the N-th passage of its own point', () => {
    const fired: number[] = [];
    let passages = 0;
    const fp = new Failpoint({ point: 'after-receive', hit: 3 }, () => fired.push(passages));
    for (let i = 0; i < 6; i++) {
      fp.pass('on-close'); // another point: not counted
      passages++;
      fp.pass('after-receive');
    }
    expect(fired).toEqual([3]);
  });
});

describe('failpointFromEnv', () => {
  test('unset or empty: no failpoint; a valid value: armed; a bad one: the error, returned rather than thrown', () => {
    expect(failpointFromEnv({})).toBeUndefined();
    expect(failpointFromEnv({ [FAILPOINT_ENV]: '' })).toBeUndefined();
    const armed = failpointFromEnv({ [FAILPOINT_ENV]: 'after-receive:2' });
    expect(armed).toBeInstanceOf(Failpoint);
    expect((armed as Failpoint).spec).toEqual({ point: 'after-receive', hit: 2 });
    expect(failpointFromEnv({ [FAILPOINT_ENV]: 'nope' })).toBeInstanceOf(RangeError);
  });
});

describe('through the environment of the command process', () => {
  let fd: number;
  beforeEach(() => {
    fd = makeMemfd('failpoint');
  });
  afterEach(() => {
    closeFd(fd);
  });

  test.each(['child', 'pidfd'] as const)('%s: child.env arms it; after-receive:2 kills the process on the second duplication', async (transport) => {
    const conn = await connect(transport, { command: PROBE_COMMAND, child: { env: { [FAILPOINT_ENV]: 'after-receive:2' } } });
    try {
      const first = await conn.dupFileDescriptor(fd);
      expect(await conn.call('identities', [first])).toHaveLength(1);
      const err = await conn.dupFileDescriptor(fd).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PeerExitedError);
      expect(err).toMatchObject({ transport, signal: 'SIGKILL' });
    } finally {
      await conn.close();
    }
  });

  test('child.env can remove a variable this process has (value undefined)', async () => {
    const saved = process.env[FAILPOINT_ENV];
    // Set here after this process loaded the library: it arms nothing here,
    // and would reach the child but for the override.
    process.env[FAILPOINT_ENV] = 'after-receive:1';
    let conn;
    try {
      conn = await connect('child', { command: PROBE_COMMAND, child: { env: { [FAILPOINT_ENV]: undefined } } });
    } finally {
      if (saved === undefined) delete process.env[FAILPOINT_ENV];
      else process.env[FAILPOINT_ENV] = saved;
    }
    try {
      const environ = readFileSync(`/proc/${conn.location.pid}/environ`, 'latin1').split('\0');
      expect(environ.filter((e) => e.startsWith(`${FAILPOINT_ENV}=`))).toEqual([]);
      // Armed, the failpoint would have killed the child at the first duplication.
      const [a, b] = await conn.dupFileDescriptors([fd, fd]);
      await conn.call('adopt', [a, b]);
      await conn.call('closeAdopted', [a, b]);
      expect(await conn.call('echo', 'alive')).toBe('alive');
    } finally {
      await conn.close();
    }
  });

  test('child.env must be an object', async () => {
    await expect(connect('child', { command: PROBE_COMMAND, child: { env: 'FOO=1' as never } })).rejects.toThrow(TypeError);
  });

  test('a helper daemon with a bad value fails to start, naming the variable', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-failpoint-'));
    try {
      const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [CLI, 'helper', '--socket', join(dir, 'h.sock')],
          { env: { ...process.env, [FAILPOINT_ENV]: 'after-receive:zero' } },
          (err, _stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stderr }),
        );
      });
      expect(r.code).toBe(3); // could not run (harness/cli/usage.ts EXIT)
      expect(r.stderr).toMatch(/FDBRIDGE_FAILPOINT="after-receive:zero" is not a failpoint/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
