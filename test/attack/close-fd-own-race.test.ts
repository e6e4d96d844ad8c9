/**
 * closeFd (public) checks that a number is not one fdbridge holds for
 * itself and closes it in one step: a caller's close of a number it does
 * not hold (a double close) never closes a socket another thread of
 * fdbridge's made at that number between the look and the close. Two
 * threads: a worker opens socket pairs of fdbridge's own (at or above the
 * fd floor, registered, as connections are) and checks each works, while
 * the main thread closes the numbers they take with closeFd over and over.
 * Every closeFd is refused (EBADF: not open, or fdbridge's own), every
 * pair works, and the fd table is as before. Generated: the pairs' kind,
 * how many numbers from the floor the main thread closes, and how many
 * pairs the worker opens.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import fc from 'fast-check';

import { closeFd, SystemError } from '../../src';
import { fdFloor, openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';
import { HangGuard } from '../util/wait-for';

const WORKER = join(__dirname, 'fixtures', 'own-sockets-worker.js');

interface Seen {
  numbers: number[];
  failures: string[];
}

test(
  "generated: closeFd racing another thread's own sockets at the same numbers never closes one",
  async () => {
    const before = openFdTable();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('seqpacket', 'stream', 'dgram'), fc.integer({ min: 2, max: 4 }), fc.integer({ min: 1000, max: 3000 }), async (kind, width, rounds) => {
        const done = new Int32Array(new SharedArrayBuffer(4));
        const worker = new Worker(WORKER, { workerData: { kind, rounds, done } });
        const guard = new HangGuard(scaled(120_000));
        try {
          // What the worker posts, in order (an error it throws among them).
          const inbox: Array<{ ready?: boolean; error?: string } & Partial<Seen>> = [];
          let wake: (() => void) | undefined;
          worker.on('message', (m) => {
            inbox.push(m);
            wake?.();
          });
          worker.on('error', (err) => {
            inbox.push({ error: String(err) });
            wake?.();
          });
          const next = async (): Promise<{ ready?: boolean; error?: string } & Partial<Seen>> => {
            while (inbox.length === 0) await new Promise<void>((resolve) => (wake = resolve));
            return inbox.shift() as { ready?: boolean } & Partial<Seen>;
          };
          const ready = await guard.within(next(), 'the worker to start');
          expect(ready).toEqual({ ready: true });
          const floor = fdFloor();
          const closed: number[] = [];
          const otherErrors: string[] = [];
          let tries = 0;
          // The main thread's double closes, while the worker's pairs come and go at these numbers.
          while (Atomics.load(done, 0) === 0 && guard.leftMs > 0) {
            for (let n = floor; n < floor + width; n++) {
              tries++;
              try {
                closeFd(n);
                closed.push(n);
              } catch (err) {
                if (!(err instanceof SystemError) || err.code !== 'EBADF') otherErrors.push(String(err));
              }
            }
          }
          if (Atomics.load(done, 0) === 0) throw new Error(`the worker's ${rounds} rounds did not end within the hang guard (${guard.ms} ms; ${tries} closeFd calls)`);
          const seen = (await guard.within(next(), 'what the worker saw')) as Seen;
          expect({ closed, otherErrors, failures: seen.failures.slice(0, 5) }).toEqual({ closed: [], otherErrors: [], failures: [] });
          // The scenario: the worker's sockets took the numbers the main thread closed.
          expect({ tries: tries > 0, overlap: seen.numbers.some((n) => n >= floor && n < floor + width) }).toEqual({ tries: true, overlap: true });
        } finally {
          await worker.terminate();
        }
      }),
      { numRuns: 4 },
    );
    expect(await fdTableSettles(process.pid, before)).toBe('');
  },
  scaled(600_000),
);
