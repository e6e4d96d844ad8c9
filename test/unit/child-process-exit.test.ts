/**
 * waitForExit (src/child-process.ts): true once the child has exited (at
 * once when its exit, a code or a signal, was seen already), false when
 * `ms` passes first, and with no `ms` only ever true; its timer does not
 * outlive the exit. killIfSpawned leaves a child whose exit by a signal was
 * seen alone, as it does one that exited with a code. The timers are
 * jest's fake ones, so that "ms passes first" is a step of the test, not a
 * race with the child.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

import { killIfSpawned, waitForExit } from '../../src/child-process';

/** A child that runs until killed, once it has started. */
async function sleeper(): Promise<ChildProcess> {
  const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
  await once(child, 'spawn');
  return child;
}

async function ended(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exit = once(child, 'exit');
    child.kill('SIGKILL');
    await exit;
  }
}

/** Whether `p` has settled, and with what, after the pending callbacks have run. */
async function peek<T>(p: Promise<T>): Promise<{ settled: boolean; value?: T }> {
  let state: { settled: boolean; value?: T } = { settled: false };
  void p.then((value) => (state = { settled: true, value }));
  await new Promise((resolve) => setImmediate(resolve));
  return state;
}

beforeEach(() => {
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
});
afterEach(() => {
  jest.useRealTimers();
});

test('a child whose exit was seen, with a code or by a signal: true at once, no timer set', async () => {
  const byCode = spawn('true', [], { stdio: 'ignore' });
  await once(byCode, 'exit');
  const bySignal = await sleeper();
  await ended(bySignal);
  expect({ code: bySignal.exitCode, signal: bySignal.signalCode }).toEqual({ code: null, signal: 'SIGKILL' });
  for (const child of [byCode, bySignal]) {
    for (const ms of [undefined, 0, 1000]) {
      expect(await peek(waitForExit(child, ms))).toEqual({ settled: true, value: true });
    }
  }
  expect(jest.getTimerCount()).toBe(0);
});

test('a running child: false once ms has passed, and it is left running', async () => {
  const child = await sleeper();
  try {
    const wait = waitForExit(child, 1000);
    jest.advanceTimersByTime(999);
    expect(await peek(wait)).toEqual({ settled: false });
    jest.advanceTimersByTime(1);
    expect(await peek(wait)).toEqual({ settled: true, value: false });
    expect({ code: child.exitCode, signal: child.signalCode }).toEqual({ code: null, signal: null });
  } finally {
    await ended(child);
  }
});

test('a running child that exits first: true, and the timer is gone', async () => {
  const child = await sleeper();
  try {
    const wait = waitForExit(child, 1000);
    const withoutMs = waitForExit(child);
    expect(jest.getTimerCount()).toBe(1);
    await ended(child);
    expect(await wait).toBe(true);
    expect(await withoutMs).toBe(true);
    expect(jest.getTimerCount()).toBe(0);
  } finally {
    await ended(child);
  }
});

test('without ms: never false, however long the child runs', async () => {
  const child = await sleeper();
  try {
    const wait = waitForExit(child);
    expect(jest.getTimerCount()).toBe(0);
    jest.advanceTimersByTime(24 * 3600 * 1000);
    expect(await peek(wait)).toEqual({ settled: false });
    await ended(child);
    expect(await wait).toBe(true);
  } finally {
    await ended(child);
  }
});

test('killIfSpawned: a child whose exit by a signal was seen is not signalled again', async () => {
  const child = await sleeper();
  await ended(child);
  const kill = jest.spyOn(child, 'kill');
  expect(killIfSpawned(child, 'SIGTERM')).toBe(false);
  expect(kill).not.toHaveBeenCalled();
});
