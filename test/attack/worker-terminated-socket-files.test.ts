/**
 * A worker thread that ends with a UnixServer or a DatagramSocket bound at
 * a path still open (worker.terminate(), or process.exit() inside it) runs
 * no close(), so close()'s removal of the socket file never ran: the file
 * stayed on disk (its fd was closed by the teardown). The teardown now
 * removes it as close() does, as Node's net.Server's path is removed when a
 * worker is terminated, and only while the path still names that very file:
 * a file or another socket put there since is never removed, nor is the
 * file of a socket closed with `{ shutdown: false }` (handed on). The fd
 * table is the same afterwards.
 */
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Worker } from 'node:worker_threads';

import { DatagramSocket } from '../../src/datagram';
import { formatFdTableDiff, openFdTable } from '../../src/fd';
import { withScope } from '../native/helpers';
import { DIST_SRC } from '../util/nobody';
import { settleFdTable } from '../util/settle';

const SEED = Number(process.env.FDBRIDGE_TEST_SEED ?? 20261204);

type Kind = 'stream' | 'seqpacket' | 'dgram';
/** What happens to the socket and its file before the worker ends. */
type Fate = 'open' | 'swapped for a file' | 'swapped for a socket' | 'closed' | 'handed on';

interface Plan {
  kind: Kind;
  fate: Fate;
  /** Bound by a relative path (the worker's working directory is this process's). */
  relativePath: boolean;
}

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { UnixServer } = require(${JSON.stringify(join(DIST_SRC, 'socket.js'))});
const { DatagramSocket } = require(${JSON.stringify(join(DIST_SRC, 'datagram.js'))});
for (const { kind, path, fate } of workerData.sockets) {
  const s = kind === 'dgram' ? DatagramSocket.bind(path) : UnixServer.listen(path, { kind });
  if (fate === 'closed') s.close();
  if (fate === 'handed on') s.close({ shutdown: false });
}
parentPort.on('message', () => process.exit(0));
parentPort.postMessage('bound');
setInterval(() => {}, 60000);
`;

/** A socket file nobody is bound to, at `path`: its inode number. */
function staleSocketFile(path: string): number {
  DatagramSocket.bind(path).close({ shutdown: false });
  return lstatSync(path).ino;
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

test('generated: the files of the sockets a worker leaves open go with it, and nothing else does', () =>
  withScope(async (s) => {
    const base = s.dir();
    let round = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            kind: fc.constantFrom<Kind>('stream', 'seqpacket', 'dgram'),
            fate: fc.constantFrom<Fate>('open', 'swapped for a file', 'swapped for a socket', 'closed', 'handed on'),
            relativePath: fc.boolean(),
          }),
          { minLength: 1, maxLength: 4 },
        ),
        fc.constantFrom('terminate', 'exit'),
        async (plans: Plan[], end) => {
          round += 1;
          const dir = join(base, `r${round}`);
          mkdirSync(dir, { mode: 0o700 });
          const paths = plans.map((_, i) => join(dir, `s${i}.sock`));
          const before = openFdTable();
          const worker = new Worker(WORKER, {
            eval: true,
            workerData: { sockets: plans.map((p, i) => ({ kind: p.kind, fate: p.fate, path: p.relativePath ? relative(process.cwd(), paths[i] as string) : paths[i] })) },
          });
          const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
          await new Promise<void>((resolve, reject) => {
            worker.once('message', () => resolve());
            worker.once('error', reject);
          });
          // What the path names when the worker ends: the inode number expected there then, or null for no file.
          const expected = plans.map((p, i): number | null => {
            const path = paths[i] as string;
            if (p.fate === 'closed') return null;
            if (p.fate === 'handed on') return lstatSync(path).ino;
            if (p.fate === 'open') return null;
            // Moved away, not unlinked: what is put there cannot take its inode number.
            renameSync(path, `${path}.moved`);
            if (p.fate === 'swapped for a file') {
              writeFileSync(path, 'kept');
              return lstatSync(path).ino;
            }
            const other = join(dir, `other${i}.sock`);
            staleSocketFile(other);
            renameSync(other, path);
            return lstatSync(path).ino;
          });
          if (end === 'terminate') await worker.terminate();
          else worker.postMessage('exit');
          await exited;
          const found = paths.map((path) => (exists(path) ? lstatSync(path).ino : null));
          expect(plans.map((p, i) => [p, end, found[i]])).toEqual(plans.map((p, i) => [p, end, expected[i]]));
          // The worker's own file, moved away, is not at the path it bound: left alone.
          for (const [i, p] of plans.entries()) {
            if (p.fate.startsWith('swapped')) expect(lstatSync(`${paths[i]}.moved`).isSocket()).toBe(true);
            if (p.fate === 'swapped for a file') expect(readFileSync(paths[i] as string, 'utf8')).toBe('kept');
          }
          const diff = await settleFdTable(process.pid, before, 2000);
          expect(formatFdTableDiff(diff)).toBe('');
        },
      ),
      { seed: SEED, numRuns: 24 },
    );
  }));

test("the main thread: its files go when it ends with its loop empty (the environment's teardown), and stay after process.exit() (no teardown), as a net.Server's path does", () =>
  withScope((s) => {
    const dir = s.dir();
    const outcome = (end: 'natural' | 'exit'): boolean[] => {
      const paths = ['dgram', 'seqpacket'].map((k) => join(dir, `${end}-${k}.sock`));
      const script = `
        const { UnixServer } = require(${JSON.stringify(join(DIST_SRC, 'socket.js'))});
        const { DatagramSocket } = require(${JSON.stringify(join(DIST_SRC, 'datagram.js'))});
        const net = require('node:net');
        DatagramSocket.bind(${JSON.stringify(paths[0])});
        UnixServer.listen(${JSON.stringify(paths[1])}, { kind: 'seqpacket' }).unref();
        const server = net.createServer().listen(${JSON.stringify(join(dir, `${end}-net.sock`))}, () => {
          server.unref();
          ${end === 'exit' ? 'process.exit(0);' : ''}
        });`;
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
      expect([r.status, r.stderr]).toEqual([0, '']);
      return [...paths, join(dir, `${end}-net.sock`)].map(exists);
    };
    expect({ natural: outcome('natural'), exit: outcome('exit') }).toEqual({ natural: [false, false, false], exit: [true, true, true] });
  }));

test("abstract names have no file: a worker's abstract sockets named as the path of someone's socket file leave that file alone", () =>
  withScope(async (s) => {
    const dir = s.dir();
    const paths = ['server', 'dgram'].map((k) => join(dir, `${k}.sock`));
    const inos = paths.map(staleSocketFile);
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const { UnixServer } = require(${JSON.stringify(join(DIST_SRC, 'socket.js'))});
      const { DatagramSocket } = require(${JSON.stringify(join(DIST_SRC, 'datagram.js'))});
      UnixServer.listen({ abstract: workerData[0] }, { kind: 'seqpacket' });
      DatagramSocket.bind({ abstract: workerData[1] });
      parentPort.postMessage('bound');
      setInterval(() => {}, 60000);`,
      { eval: true, workerData: paths },
    );
    await new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      worker.once('error', reject);
    });
    await worker.terminate();
    expect(paths.map((path) => lstatSync(path).ino)).toEqual(inos);
  }));
