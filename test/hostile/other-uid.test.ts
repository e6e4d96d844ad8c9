/**
 * A helper daemon attacked by another local user (nobody, 65534; these tests
 * run as root and are skipped otherwise), for what the other test files do
 * not already run as that user: what each connection costs the daemon once
 * it is gone, and closes that would block (a lingering TCP socket) reached
 * through paths other than a served duplication: fds sent by a uid the
 * daemon refuses, and fds still unread in a connection's queue when the
 * daemon ends it; and where a datagram socket may be bound.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { join } from 'node:path';

import { connect, DatagramSocket, HelperDaemon, type HelperStatus } from '../../src';
import { socketObjectsAlive } from '../../src/test-hooks';
import { kernelHasPassRights } from '../../scenarios/support/hostile';
import { hasPython, withAttacker } from '../util/linger-attacker';
import { DIST_SRC, isRoot, NOBODY, runAsNobody, spawnAsNobody, type NobodyProcess } from '../util/nobody';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const describeRoot = isRoot ? describe : describe.skip;
const ROOT_UID = process.getuid?.() ?? 0;

/** Full collections until the live native sockets are back to `baseline`, or a bounded number of tries. */
async function socketsSettle(baseline: number): Promise<number> {
  for (let i = 0; i < 20 && socketObjectsAlive() > baseline; i++) {
    await new Promise((r) => setTimeout(r, 20));
    gc();
  }
  return socketObjectsAlive();
}

describeRoot('what a connection costs once it is gone (client: nobody)', () => {
  test("connections that each made a 150 kB call leave no native socket (and so no receive buffer) behind, on either side", async () => {
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-other-uid-${process.pid}-buffers`, allowUids: [NOBODY], diagnostics: true });
    try {
      gc();
      const baseline = socketObjectsAlive();
      const p = runAsNobody(`
        const { closeFd, connect, makeMemfd } = require(${JSON.stringify(DIST_SRC)});
        const { socketObjectsAlive } = require(${JSON.stringify(join(DIST_SRC, 'test-hooks.js'))});
        require('node:v8').setFlagsFromString('--expose-gc');
        const gc = require('node:vm').runInNewContext('gc');
        const payload = 'x'.repeat(150000);
        (async () => {
          const fd = makeMemfd('buffers');
          gc();
          const before = socketObjectsAlive();
          // In a function of its own: no reference to a connection survives in this frame.
          const churn = async () => {
            let n = 0;
            for (let i = 0; i < 40; i++) {
              const c = await connect('helper', { command: { name: 'probe' }, socketPath: ${JSON.stringify(daemon.socketPath)}, trustPeer: { uids: [${ROOT_UID}] } });
              await c.dupFileDescriptor(fd);
              if ((await c.call('echo', payload)).length === payload.length) n++;
              await c.close();
            }
            return n;
          };
          const echoed = await churn();
          closeFd(fd);
          for (let i = 0; i < 20 && socketObjectsAlive() > before; i++) { await new Promise((r) => setTimeout(r, 20)); gc(); }
          return { echoed, left: socketObjectsAlive() - before };
        })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: e.code ?? e.name, message: e.message } })));`);
      expect(await p.line('result')).toEqual({ result: { echoed: 40, left: 0 } });
      await p.exited();
      expect(daemon.stats.connections).toBe(40);
      for (let i = 0; i < 500 && daemon.stats.active > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(daemon.stats.active).toBe(0);
      expect(await socketsSettle(baseline)).toBeLessThanOrEqual(baseline);
    } finally {
      await daemon.close();
    }
  });
});

/**
 * A client is served (connect, a call, a close that the daemon answers)
 * while the daemon has a lingering socket to close: each step ends in the
 * client's own TimeoutError, not a hang, were the daemon stuck.
 */
/** Tells the attacker to go on (a line on its stdin), and waits for the line with `key` it prints next. */
async function goOn(attacker: NobodyProcess, key: string): Promise<void> {
  attacker.child.stdin?.write('stopped\n');
  await attacker.line(key);
}

/**
 * How long a connect here waits for the daemon's answer: a daemon whose
 * event loop were stuck in a close would never answer, so any bound catches
 * it; this one is far past what a loaded machine's run-queue waits add.
 */
const ANSWER_MS = 20_000;

/** The status of the helper daemon at `socketPath` (its built-in status command). */
async function helperStatus(socketPath: string): Promise<HelperStatus> {
  const conn = await connect('helper', { command: { name: 'status' }, socketPath, timeoutMs: ANSWER_MS });
  try {
    return await conn.call<HelperStatus>('status');
  } finally {
    await conn.close();
  }
}

async function expectServed(socketPath: string): Promise<void> {
  const conn = await connect('helper', { command: { name: 'probe' }, socketPath, timeoutMs: ANSWER_MS });
  try {
    expect(await conn.call('echo', 'not stalled')).toBe('not stalled');
  } finally {
    await conn.close();
  }
}

describeRoot('a close that would block never stalls the daemon, whoever sent the fd and however it is left (attacker: nobody)', () => {
  // The daemon runs in its own process: were its event loop stuck in a
  // close, this test's connect would end in the client's own TimeoutError
  // instead of hanging the test process with it.
  (hasPython() ? test : test.skip).each([
    ['from a uid the daemon refuses, sent before it accepted (where the kernel can, it refuses the send)', 'refused', [], 3],
    ['from an allowed uid, left unread in the queue of a connection the daemon ends', 'unread', ['--allow-uid', String(NOBODY)], 2],
  ] as const)('a lingering TCP socket %s', async (_what, mode, args, answer) => {
    await withAttacker(mode, args, async ({ attacker, socketPath, whileStopped }) => {
      // Stopped until the attacker has closed its copies: the daemon's close is the last.
      // Where the kernel can, it refuses fds to a connection not accepted yet
      // (the daemon's listener has SO_PASSRIGHTS off): nothing is queued.
      if (mode === 'refused') {
        let queued: unknown;
        await whileStopped(async () => (queued = await attacker.line('queued')));
        expect(queued).toEqual({ queued: !kernelHasPassRights() });
      }
      expect(await attacker.line('answer')).toEqual({ answer }); // 3: REFUSED, 2: READY
      // The daemon has the lingering socket to close by now; others are served meanwhile.
      await expectServed(socketPath);
    });
  });

  (hasPython() ? test : test.skip)('a lingering TCP socket in a message that arrives truncated (MSG_TRUNC), from an allowed uid', async () => {
    await withAttacker('truncated', ['--allow-uid', String(NOBODY)], async ({ attacker, socketPath, whileStopped }) => {
      expect(await attacker.line('ready')).toEqual({ ready: 2 }); // READY
      // Stopped until the attacker has sent the oversized frame and closed its copies.
      await whileStopped(() => goOn(attacker, 'sent'));
      // The daemon closes the fds of that frame (the lingering socket's close
      // blocks) and hangs up on the attacker; others are served meanwhile.
      await expectServed(socketPath);
      expect(await attacker.line('answer')).toEqual({ answer: 'eof' });
    });
  });

  (hasPython() ? test : test.skip)('a DUP past its quota is answered once the fds it brought are closed: a lingering TCP socket among them holds back that answer alone', async () => {
    await withAttacker('overquota', ['--allow-uid', String(NOBODY), '--max-fds', '1'], async ({ attacker, socketPath, whileStopped }) => {
      expect(await attacker.line('ready')).toEqual({ ready: 2 }); // READY
      await whileStopped(() => goOn(attacker, 'sent'));
      // Its DUP of 2 is past its quota of 1: refused, the two sockets handed
      // to the closer, whose closes of them block. The daemon serves others
      // meanwhile (its replies go out)...
      await expectServed(socketPath);
      expect(await helperStatus(socketPath)).toMatchObject({ fdsClosing: 2, stats: { quotaHits: { fds: 1 } } });
      // ...but not that answer: it comes only once the attacker has reset
      // the connections (which ends those closes), and then neither fd
      // counts any more.
      attacker.child.stdin?.write('go\n');
      expect(await attacker.line('answer')).toEqual({ answer: 8, afterReset: true }); // ERROR
      expect(await helperStatus(socketPath)).toMatchObject({ fdsClosing: 0 });
    }, 2);
  });
});

describeRoot('a bound datagram socket is never where another user can swap it (attacker: nobody)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-dgram-uid-'));
    chmodSync(dir, 0o755); // nobody may pass through
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('a private directory under one that others can write (not sticky) is refused: nobody could rename it away and put its own socket there', async () => {
    const open = join(dir, 'open');
    mkdirSync(join(open, 'private'), { recursive: true, mode: 0o700 });
    chmodSync(open, 0o777);
    chmodSync(join(open, 'private'), 0o700);
    expect(() => DatagramSocket.bind(join(open, 'private', 'rx.sock'))).toThrow(
      expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH', message: expect.stringMatching(/not sticky/) }),
    );
    expect(existsSync(join(open, 'private', 'rx.sock'))).toBe(false);
    // What it guards against: nobody can take our private directory away here.
    const swap = spawnAsNobody('mv', [join(open, 'private'), join(open, 'stolen')]);
    expect((await swap.exited()).code).toBe(0);
    expect(existsSync(join(open, 'stolen'))).toBe(true);
  });

  test("a private directory under one that belongs to nobody is refused, and so is nobody's own directory", () => {
    const theirs = join(dir, 'theirs');
    mkdirSync(join(theirs, 'private'), { recursive: true, mode: 0o700 });
    chownSync(theirs, NOBODY, NOBODY);
    expect(() => DatagramSocket.bind(join(theirs, 'private', 'rx.sock'))).toThrow(
      expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH', message: expect.stringMatching(/belongs to uid 65534/) }),
    );
    // privateDir: false is for a directory secured some other way, never for one another user controls.
    expect(() => DatagramSocket.bind(join(theirs, 'rx.sock'), { privateDir: false })).toThrow(expect.objectContaining({ code: 'ERR_FDBRIDGE_UNSAFE_PATH' }));
    expect(existsSync(join(theirs, 'private', 'rx.sock'))).toBe(false);
    expect(existsSync(join(theirs, 'rx.sock'))).toBe(false);
  });
});
