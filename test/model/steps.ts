/**
 * The model-based test's steps (what fast-check's `fc.commands` calls
 * commands; here a command is what a connection talks to): each makes
 * requests on the real connection and records, in the same step, what the
 * reference model says each must come to (World.track). Requests are not
 * awaited by the step that makes them, so that later steps (a burst, close,
 * the peer's death) meet them in flight; Pause lets the event loop run,
 * Settle waits for everything and compares the far side with the model.
 *
 * Steps hold only their parameters (they are replayed while shrinking);
 * slot and position selectors are taken modulo what exists at run time.
 */
import fc from 'fast-check';

import { createRng } from '../../harness/rng';
import { counters, queueCharge, World, type Model } from './world';

type AsyncStep = fc.AsyncCommand<Model, World>;

abstract class Step implements AsyncStep {
  check(_m: Readonly<Model>): boolean {
    return true;
  }

  async run(_m: Model, w: World): Promise<void> {
    counters.steps++;
    w.step++;
    w.trace(`step ${w.step}: ${this.toString()}`);
    await this.act(w);
    w.check();
  }

  protected abstract act(w: World): Promise<void> | void;
  abstract toString(): string;
}

/** Opens another file in the client (a memfd, a pipe, or a socketpair's two ends). */
export class OpenFile extends Step {
  constructor(readonly kind: number) {
    super();
  }

  protected act(w: World): void {
    w.openFile(this.kind);
  }

  toString(): string {
    return `OpenFile(${['memfd', 'pipe', 'socketpair'][this.kind]})`;
  }
}

/** Makes a second client fd for the file of an open slot. */
export class DupLocal extends Step {
  constructor(readonly slot: number) {
    super();
  }

  protected act(w: World): void {
    const open = w.openSlots();
    w.dupLocal(open[this.slot % open.length] as number);
  }

  toString(): string {
    return `DupLocal(${this.slot})`;
  }
}

/** Closes a client fd between steps (one open slot always stays). */
export class CloseLocal extends Step {
  constructor(readonly slot: number) {
    super();
  }

  override check(m: Readonly<Model>): boolean {
    return m.slots.filter((f) => f !== null).length > 1;
  }

  protected act(w: World): void {
    const open = w.openSlots();
    w.closeLocal(open[this.slot % open.length] as number);
  }

  toString(): string {
    return `CloseLocal(${this.slot})`;
  }
}

/**
 * Opens client fds (ballast: a file the model does not track) until the
 * lowest free number is `extra` past the fd floor. From then on the
 * client's numbers, the temporaries Dup closes among them, share the range
 * where the library makes its own fds (pins, duplicates, queued copies):
 * the floor no longer keeps them apart, and a closed number must still be
 * EBADF, never one of the library's fds that took it.
 */
export class Crowd extends Step {
  constructor(readonly extra: number) {
    super();
  }

  protected act(w: World): void {
    w.crowd(this.extra);
  }

  toString(): string {
    return `Crowd(${this.extra})`;
  }
}

/**
 * Duplicates `count` fds into the command: one dupFileDescriptors of the
 * whole list ('batch'), or a dupFileDescriptor per entry made in the same
 * tick ('singles'). Entries name open client fds, drawn by `mix` (0: all the
 * first open slot; else a seeded draw over the open slots, so that a list
 * of hundreds shrinks as two numbers). The positions in `closedBefore` get
 * a fresh dup of their fd that is closed before the call (the number is
 * then not open: EBADF, and a batch fails whole); those in `closedAfter`
 * one closed right after the call, in the same tick (the call must still
 * deliver the file the number named when it was made).
 */
export class Dup extends Step {
  constructor(
    readonly form: 'batch' | 'singles',
    readonly count: number,
    readonly mix: number,
    readonly closedBefore: readonly number[],
    readonly closedAfter: readonly number[],
  ) {
    super();
  }

  protected act(w: World): void {
    const n = this.count;
    const open = w.openSlots();
    const rng = createRng(this.mix);
    const fds: number[] = [];
    const files: number[] = [];
    for (let i = 0; i < n; i++) {
      const slot = open[this.mix === 0 ? 0 : rng.int(0, open.length - 1)] as number;
      fds.push(w.pool[slot] as number);
      files.push(w.model.slots[slot] as number);
    }
    const before = new Set(n === 0 ? [] : this.closedBefore.map((x) => x % n));
    const after = new Set(n === 0 ? [] : this.closedAfter.map((x) => x % n).filter((i) => !before.has(i)));
    // Every temporary number is taken before any is closed, so that each
    // closed one is a number nothing else of ours holds.
    const temps = new Map<number, number>();
    for (const i of [...before, ...after]) {
      const t = w.dupClientFd(fds[i] as number);
      temps.set(i, t);
      fds[i] = t;
    }
    for (const i of before) w.closeClientFd(temps.get(i) as number);
    const label = `${this.form === 'batch' ? 'dupFileDescriptors' : 'dupFileDescriptor x'}${n}`;
    if (this.form === 'batch') {
      const p = w.conn.dupFileDescriptors(fds);
      w.track(
        `${label} [${fds.slice(0, 6).join(', ')}${n > 6 ? ', ...' : ''}]${before.size ? ` (closed before: positions ${[...before].join(', ')})` : ''}`,
        p,
        before.size > 0 ? { kind: 'ebadf' } : { kind: 'fds', files, single: false },
        false,
        queueCharge(0, n),
      );
    } else {
      fds.forEach((fd, i) => {
        const p = w.conn.dupFileDescriptor(fd);
        const how = before.has(i) ? ', closed before' : after.has(i) ? ', closed after' : '';
        w.track(
          `${label}: #${i} dupFileDescriptor(${fd}${how})`,
          p,
          before.has(i) ? { kind: 'ebadf' } : { kind: 'fds', files: [files[i] as number], single: true },
          false,
          queueCharge(0, 1),
        );
      });
    }
    for (const i of after) w.closeClientFd(temps.get(i) as number);
  }

  toString(): string {
    const list = (xs: readonly number[]): string => `[${xs.join(',')}]`;
    return `Dup(${JSON.stringify(this.form)},${this.count},${this.mix},${list(this.closedBefore)},${list(this.closedAfter)})`;
  }
}

/**
 * `count` calls made in one tick, each with a `size`-byte payload (echoed
 * back when `back`), and every `dupEvery`-th also a dupFileDescriptor: past
 * the socket buffer, each must still get its own answer, in order.
 */
export class Burst extends Step {
  constructor(
    readonly count: number,
    readonly size: number,
    readonly back: boolean,
    readonly dupEvery: number,
  ) {
    super();
  }

  protected act(w: World): void {
    const payload = 'x'.repeat(this.size);
    const open = w.openSlots();
    for (let i = 0; i < this.count; i++) {
      const token = w.token();
      w.track(
        `burst call #${i} echo(${token}, ${this.size} bytes)`,
        w.conn.call('echo', token, payload, this.back),
        { kind: 'value', value: [token, this.back ? payload : this.size] },
        false,
        queueCharge(this.size, 0),
      );
      if (this.dupEvery > 0 && i % this.dupEvery === 0) {
        const slot = open[i % open.length] as number;
        const fd = w.pool[slot] as number;
        w.track(
          `burst dup #${i} dupFileDescriptor(${fd})`,
          w.conn.dupFileDescriptor(fd),
          { kind: 'fds', files: [w.model.slots[slot] as number], single: true },
          false,
          queueCharge(0, 1),
        );
      }
    }
  }

  toString(): string {
    return `Burst(${this.count},${this.size},${this.back},${this.dupEvery})`;
  }
}

/**
 * A call that takes `ms`: 'spin' blocks the command's thread (and its event
 * loop: requests queue behind it), 'sleep' answers later while others are
 * answered meanwhile.
 */
export class Timed extends Step {
  constructor(
    readonly method: 'spin' | 'sleep',
    readonly ms: number,
  ) {
    super();
  }

  protected act(w: World): void {
    const token = w.token();
    w.track(`${this.method}(${token}, ${this.ms})`, w.conn.call(this.method, token, this.ms), { kind: 'value', value: token });
  }

  toString(): string {
    return `Timed(${JSON.stringify(this.method)},${this.ms})`;
  }
}

/** A call the command answers only at the next Unhold (or never: close or death must settle it). */
export class Hold extends Step {
  protected act(w: World): void {
    const token = w.token();
    const req = w.track(`hold(${token})`, w.conn.call('hold', token), { kind: 'value', value: token }, w.model.conn === 'open');
    if (w.model.conn === 'open') w.model.held.push(req);
  }

  toString(): string {
    return 'Hold()';
  }
}

/** Releases every hold made so far; answers how many (requests reach the command in the order they were made). */
export class Unhold extends Step {
  protected act(w: World): void {
    w.unhold();
  }

  toString(): string {
    return 'Unhold()';
  }
}

/** Lets the event loop run: `ms` 0 is one setImmediate turn. */
export class Pause extends Step {
  constructor(readonly ms: number) {
    super();
  }

  protected async act(): Promise<void> {
    await new Promise((r) => (this.ms === 0 ? setImmediate(r) : setTimeout(r, this.ms)));
  }

  toString(): string {
    return `Pause(${this.ms})`;
  }
}

/**
 * Waits for every request that must settle, then compares both sides'
 * tables with the model (World.checkCensus) and asks the command what each
 * number it holds names from inside; then the command closes a fraction
 * (`discard` / 8) of them, so that later numbers are reused there.
 */
export class Settle extends Step {
  constructor(readonly discard: number) {
    super();
  }

  protected async act(w: World): Promise<void> {
    await w.awaitSettled('at Settle');
    w.check();
    w.checkCensus('at Settle');
    if (w.model.conn !== 'open' || w.model.far.size === 0) return;
    const far = [...w.model.far.keys()];
    for (let i = 0; i < far.length; i += 2000) {
      const chunk = far.slice(i, i + 2000);
      w.track(
        `identities(${chunk.length} fds)`,
        w.conn.call('identities', chunk),
        { kind: 'value', value: chunk.map((fd) => w.identities[w.model.far.get(fd) as number]) },
        false,
        queueCharge(12 * chunk.length, 0),
      );
    }
    const k = Math.floor((far.length * this.discard) / 8);
    if (k > 0) {
      const gone = new Map(far.slice(0, k).map((fd) => [fd, w.model.far.get(fd) as number]));
      for (const fd of gone.keys()) w.model.far.delete(fd);
      w.track(`discard(${k} fds)`, w.conn.call('discard', [...gone.keys()]), { kind: 'value', value: k }, false, queueCharge(12 * k, 0), () => {
        for (const [fd, file] of gone) w.model.far.set(fd, file);
      });
    }
    await w.awaitSettled('at Settle, after identities and discard');
    w.check();
  }

  toString(): string {
    return `Settle(${this.discard})`;
  }
}

/** close(): what is in flight settles (its answer, or ClosedError), every later request rejects with ClosedError. */
export class Close extends Step {
  override check(m: Readonly<Model>): boolean {
    return m.conn !== 'closed';
  }

  protected async act(w: World): Promise<void> {
    w.interrupt('closed');
    await w.conn.close();
    w.model.conn = 'closed';
    w.model.far.clear();
    w.model.held.length = 0;
    await new Promise((r) => setImmediate(r));
    const left = w.unsettled();
    if (left.length > 0) {
      throw new Error(`after close() resolved, ${left.length} request(s) were unsettled: ${left.slice(0, 5).map((r) => r.label).join('; ')}`);
    }
  }

  toString(): string {
    return 'Close()';
  }
}

/**
 * The command's process dies (SIGKILL; a worker is terminated): what is in
 * flight settles (its answer, or PeerExitedError), later requests reject
 * with PeerExitedError.
 */
export class Kill extends Step {
  override check(m: Readonly<Model>): boolean {
    return m.conn === 'open' && m.killable;
  }

  protected async act(w: World): Promise<void> {
    w.interrupt('died');
    await w.kill();
    w.model.conn = 'dead';
    w.model.far.clear();
    w.model.held.length = 0;
    await w.awaitSettled('after the peer died');
  }

  toString(): string {
    return 'Kill()';
  }
}

export interface Sizes {
  /** Longest fd list of one Dup. */
  maxFds: number;
  /** Most calls in one Burst. */
  maxBurst: number;
  /** Most payload bytes in flight in one Burst. */
  maxBurstBytes: number;
}

/** How many fds one Dup names: mostly a few, often past one message (253), up to `max`. */
const fdCount = (max: number): fc.Arbitrary<number> =>
  fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: 8 }) }, { weight: 2, arbitrary: fc.integer({ min: 0, max }) });

const positions = fc.oneof({ weight: 3, arbitrary: fc.constant<number[]>([]) }, { weight: 2, arbitrary: fc.array(fc.nat(1000), { minLength: 1, maxLength: 3 }) });

/** Every step, with the sizes of the long run or of `npm test`. */
export function stepArbitraries(sizes: Sizes): Array<fc.Arbitrary<AsyncStep>> {
  const dup = fc
    .tuple(fc.constantFrom<'batch' | 'singles'>('batch', 'singles'), fdCount(sizes.maxFds), fc.nat(), positions, positions)
    .map(([form, count, mix, before, after]) => new Dup(form, count, mix, before, after));
  return [
    fc.nat(2).map((k) => new OpenFile(k)),
    fc.nat(16).map((k) => new Crowd(k)),
    fc.nat(63).map((s) => new DupLocal(s)),
    fc.nat(63).map((s) => new CloseLocal(s)),
    // Listed twice: duplications are what the model is about.
    dup,
    dup,
    fc
      .tuple(fc.integer({ min: 1, max: sizes.maxBurst }), fc.constantFrom(0, 16, 1024, 16_384, 65_536), fc.boolean(), fc.constantFrom(0, 1, 7, 100))
      .map(([count, size, back, dupEvery]) => new Burst(Math.max(1, Math.min(count, Math.floor(sizes.maxBurstBytes / Math.max(1, size)))), size, back, dupEvery)),
    fc.integer({ min: 0, max: 150 }).map((ms) => new Timed('spin', ms)),
    fc.integer({ min: 0, max: 100 }).map((ms) => new Timed('sleep', ms)),
    fc.constant(new Hold()),
    fc.constant(new Unhold()),
    fc.constantFrom(0, 0, 1, 5, 20).map((ms) => new Pause(ms)),
    fc.nat(8).map((d) => new Settle(d)),
    fc.constant(new Close()),
    fc.constant(new Kill()),
  ];
}
