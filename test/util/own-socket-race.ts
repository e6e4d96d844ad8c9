/**
 * Test utility: the main thread names, where a caller names its own fds,
 * the numbers a worker thread's sockets of fdbridge's own take and give up
 * meanwhile (test/attack/fixtures/own-sockets-worker.js: at or above the
 * fd floor, registered, as connections are, each checked to work). For the
 * tests that fdbridge's check that a number is not its own and the use of
 * the number are one step: no socket another thread makes at the number
 * between them is taken (closed, or given a second owner).
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

import { fdFloor } from '../../src/fd';
import { scaled } from './time-scale';
import { HangGuard } from './wait-for';

const WORKER = join(__dirname, '..', 'attack', 'fixtures', 'own-sockets-worker.js');

export interface OwnSocketRace {
  /** The worker's sockets' kind. */
  kind: 'seqpacket' | 'stream' | 'dgram';
  /** How many rounds the worker opens, checks and closes its sockets. */
  rounds: number;
  /** How many numbers from the fd floor up the main thread names. */
  width: number;
  /** The worker opens a listening socket each round too (kind seqpacket or stream). */
  listen?: boolean;
}

export interface OwnSocketRaceSeen {
  /** The numbers `act` returned for: taken, where it should have been refused. */
  taken: number[];
  /** What `act` threw that `refused` did not take for a refusal. */
  otherErrors: string[];
  /** What failed in the worker (a socket of its that no longer worked, or was no longer registered); the first 5. */
  failures: string[];
  /** Whether the scenario happened: `act` was called, and the worker's sockets took numbers it named. */
  raced: { tries: boolean; overlap: boolean };
}

/**
 * Runs the race of `race`: `act(n)` over and over, on the main thread, for
 * each number n it names, until the worker has done its rounds. `act`
 * returns when it took the number (it closes what it took) and throws
 * when refused: `refused(err)` tells a refusal from another error.
 */
export async function raceOwnSockets(race: OwnSocketRace, act: (fd: number) => void, refused: (err: unknown) => boolean): Promise<OwnSocketRaceSeen> {
  const done = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(WORKER, { workerData: { kind: race.kind, rounds: race.rounds, listen: race.listen === true, hangMs: scaled(10_000), done } });
  const guard = new HangGuard(scaled(120_000));
  try {
    // What the worker posts, in order (an error it throws among them).
    const inbox: Array<{ ready?: boolean; error?: string; numbers?: number[]; failures?: string[] }> = [];
    let wake: (() => void) | undefined;
    worker.on('message', (m) => {
      inbox.push(m);
      wake?.();
    });
    worker.on('error', (err) => {
      inbox.push({ error: String(err) });
      wake?.();
    });
    const next = async (): Promise<(typeof inbox)[number]> => {
      while (inbox.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      return inbox.shift() as (typeof inbox)[number];
    };
    const ready = await guard.within(next(), 'the worker to start');
    if (ready.ready !== true) throw new Error(`the worker did not start: ${JSON.stringify(ready)}`);
    const floor = fdFloor();
    const taken: number[] = [];
    const otherErrors: string[] = [];
    let tries = 0;
    // The main thread's acts, while the worker's sockets come and go at these numbers.
    while (Atomics.load(done, 0) === 0 && guard.leftMs > 0) {
      for (let n = floor; n < floor + race.width; n++) {
        tries++;
        try {
          act(n);
          taken.push(n);
        } catch (err) {
          if (!refused(err)) otherErrors.push(String(err));
        }
      }
    }
    if (Atomics.load(done, 0) === 0) throw new Error(`the worker's ${race.rounds} rounds did not end within the hang guard (${guard.ms} ms; ${tries} tries)`);
    const seen = await guard.within(next(), 'what the worker saw');
    if (seen.numbers === undefined || seen.failures === undefined) throw new Error(`the worker failed: ${JSON.stringify(seen)}`);
    return {
      taken,
      otherErrors: otherErrors.slice(0, 5),
      failures: seen.failures.slice(0, 5),
      raced: { tries: tries > 0, overlap: seen.numbers.some((n) => n >= floor && n < floor + race.width) },
    };
  } finally {
    await worker.terminate();
  }
}
