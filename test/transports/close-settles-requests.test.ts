/**
 * close() settles every request made before it, on every transport alike:
 * a request still pending when close() is called (a dupFileDescriptor, a
 * dupFileDescriptors of one message or several, with or without a bad
 * entry, a call, one that never answers) rejects with ClosedError, one
 * that settled before keeps its own answer, and each has settled once
 * close() resolves. What the duplications gave the command is closed with
 * it: this process's fd table (and the helper daemon's) is as before, and
 * a spawned command process exits cleanly.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { ClosedError, connect, PROBE_COMMAND, SystemError, type Connection, type TransportName } from '../../src';
import { closeFd, diffFdTables, formatFdTableDiff, makeMemfd, openFdTable } from '../../src/fd';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles, startHelperProcess, type HelperProcess } from '../util/processes';
import { scaled } from '../util/time-scale';
import { SPAWNED, TRANSPORTS } from '../util/transport-suite';

/**
 * A request: one dupFileDescriptor; a dupFileDescriptors of `count` fds
 * (past 253: several messages), with a closed number at `bad` (an index
 * taken modulo the count) or none; a call answered at once (`where`) or
 * never (`hang`).
 */
type Request = { kind: 'dup' } | { kind: 'batch'; count: number; bad: number | null } | { kind: 'call'; method: 'where' | 'hang' };

const request: fc.Arbitrary<Request> = fc.oneof(
  fc.record({ kind: fc.constant('dup' as const) }),
  fc.record({
    kind: fc.constant('batch' as const),
    count: fc.oneof(fc.integer({ min: 1, max: 253 }), fc.integer({ min: 254, max: 600 })),
    bad: fc.option(fc.nat(), { nil: null }),
  }),
  fc.record({ kind: fc.constant('call' as const), method: fc.constantFrom('where' as const, 'hang' as const) }),
);

/**
 * When close() is called: in the tick the requests were made (`turns` 0),
 * or after that many turns of the event loop (setImmediate), when every
 * answer that has come has run its callbacks (so what the test saw settled
 * is what had settled).
 */
const turns = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 6 }));

/** The transports whose command's copies are made in this process (the fd table shows them at once). */
const IN_PROCESS = new Set<TransportName>(['direct', 'worker']);

let dir: string;
let helper: HelperProcess;
let socketPath: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-close-settles-'));
  socketPath = join(dir, 'helper.sock');
  helper = await startHelperProcess(socketPath);
});

afterAll(async () => {
  await helper?.stop('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

/** Whether `outcome` is the answer `req` gets when close() does not come first. */
function ownAnswer(req: Request, outcome: { ok: boolean; value: unknown }): boolean {
  const { ok, value } = outcome;
  switch (req.kind) {
    case 'dup':
      return ok && Number.isInteger(value) && (value as number) >= 0;
    case 'batch':
      if (req.bad !== null) return !ok && value instanceof SystemError && value.code === 'EBADF' && value.index === req.bad % req.count;
      return ok && Array.isArray(value) && value.length === req.count && value.every((fd) => Number.isInteger(fd) && fd >= 0);
    case 'call':
      return req.method === 'where' && ok && (value as { pid?: unknown }).pid !== undefined;
  }
}

describe.each([...TRANSPORTS, 'remote' as const])('%s transport', (transport: TransportName) => {
  test(
    'generated requests, then close() in the same tick or some turns later: each pending one rejects with ClosedError, ' +
      'each has settled once close() resolves, the fd tables as before',
    async () => {
      const source = makeMemfd('close-settles');
      const closed = makeMemfd('close-settles-closed');
      closeFd(closed);
      try {
        await fc.assert(
          fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 6 }), turns, async (requests, wait) => {
            const here = openFdTable();
            const helperBefore = transport === 'helper' ? openFdTable(helper.pid) : undefined;
            const conn: Connection = await connect(transport, {
              command: PROBE_COMMAND,
              socketPath,
              ...(transport === 'remote' ? { via: LOCAL_REMOTE.via, serve: LOCAL_REMOTE.serve } : {}),
            });
            const outcomes = requests.map((req) => {
              let p: Promise<unknown>;
              if (req.kind === 'dup') p = conn.dupFileDescriptor(source);
              else if (req.kind === 'batch') {
                const fds = new Array<number>(req.count).fill(source);
                if (req.bad !== null) fds[req.bad % req.count] = closed;
                p = conn.dupFileDescriptors(fds);
              } else p = conn.call(req.method);
              const o: { settled: boolean; ok: boolean; value: unknown } = { settled: false, ok: false, value: undefined };
              p.then(
                (value) => Object.assign(o, { settled: true, ok: true, value }),
                (value: unknown) => Object.assign(o, { settled: true, ok: false, value }),
              );
              return o;
            });
            for (let i = 0; i < wait; i++) await new Promise((r) => setImmediate(r));
            const pendingAtClose = outcomes.map((o) => !o.settled);
            await conn.close();
            // Taken at once: what close() closes in this process is closed when it resolves.
            const atClose = openFdTable();
            const seen = requests.map((req, i) => {
              const o = outcomes[i] as { settled: boolean; ok: boolean; value: unknown };
              if (!o.settled) return `${req.kind}: unsettled after close() resolved`;
              if (pendingAtClose[i]) return o.value instanceof ClosedError ? 'ClosedError' : `${req.kind}: ${o.ok ? 'resolved' : `rejected with ${String(o.value)}`} after close()`;
              return ownAnswer(req, o) ? 'its answer' : `${req.kind}: a wrong answer ${String(o.value)}`;
            });
            expect(seen).toEqual(pendingAtClose.map((p) => (p ? 'ClosedError' : 'its answer')));
            // direct and worker copy into this process: not a number left to settle. The others'
            // processes and sockets (a child's pipes, a helper's socket) end as the kernel gets to them.
            if (IN_PROCESS.has(transport)) expect(formatFdTableDiff(diffFdTables(here, atClose))).toBe('');
            else expect(await fdTableSettles(process.pid, here)).toBe('');
            if (helperBefore) expect(await fdTableSettles(helper.pid, helperBefore)).toBe('');
            if (SPAWNED.has(transport)) expect(await exitOf((conn as ChildConnection).child)).toEqual({ code: 0, signal: null });
          }),
          {
            numRuns: transport === 'remote' ? 8 : SPAWNED.has(transport) ? 15 : 30,
            examples: [
              // A batch of two messages whose first fails, its second's copies released while close() runs.
              [[{ kind: 'batch', count: 254, bad: 0 }], 1],
              [[{ kind: 'batch', count: 300, bad: 299 }, { kind: 'call', method: 'where' }], 0],
              [[{ kind: 'dup' }, { kind: 'batch', count: 2, bad: null }, { kind: 'call', method: 'hang' }], 0],
            ],
          },
        );
      } finally {
        closeFd(source);
      }
    },
    scaled(120_000),
  );
});
