/**
 * A diagnostic command: it inspects, uses and adopts the fds a connection
 * duplicated into its context, and can misbehave on request (hang, exit).
 * Tests and scenarios use it to check, on the far side, what arrived.
 */
import { spawnSync } from 'node:child_process';
import { readSync, writeSync } from 'node:fs';

import type { CommandContext, ModuleCommandSpec } from '../command';
import { fdFlags, fdIdentity, fdLimit, openFdTable, setFdLimit, type FdFlags } from '../fd';
import { distPath } from '../paths';

export interface WireIdentity {
  dev: string;
  ino: string;
  type: string;
}

export class ProbeCommand {
  readonly context: CommandContext;
  #adopted = new Set<number>();

  constructor(context: CommandContext) {
    this.context = context;
  }

  where(): { transport: string; pid: number; threadId: number } {
    return { transport: this.context.transport, pid: this.context.pid, threadId: this.context.threadId };
  }

  echo<T>(value: T): T {
    return value;
  }

  /** (st_dev, st_ino, type) of each fd, as strings (JSON has no bigint). */
  identities(fds: number[]): WireIdentity[] {
    return fds.map((fd) => {
      const id = fdIdentity(fd);
      return { dev: String(id.dev), ino: String(id.ino), type: id.type };
    });
  }

  flags(fds: number[]): FdFlags[] {
    return fds.map((fd) => fdFlags(fd));
  }

  /** Writes `text` through `fd` (at its current, shared offset). Returns the bytes written. */
  write(fd: number, text: string): number {
    return writeSync(fd, text);
  }

  /** Reads up to `max` bytes from `fd` as UTF-8. */
  read(fd: number, max: number): string {
    const buf = Buffer.alloc(max);
    const n = readSync(fd, buf, 0, max, null);
    return buf.toString('utf8', 0, n);
  }

  /** Takes ownership of the fds; they are closed by closeAdopted() or close(). */
  adopt(fds: number[]): number {
    for (const fd of fds) {
      this.context.adoptFd(fd);
      this.#adopted.add(fd);
    }
    return fds.length;
  }

  /**
   * Closes fds it adopted (every one named must be, else none is closed),
   * and answers once they are closed. They are the client's: closed by
   * closeClientFds, since such a close can block for as long as the client
   * chose (in a helper daemon it runs on the background closer, never on
   * the event loop, and only this answer waits for it).
   */
  closeAdopted(fds: number[]): Promise<void> {
    const unknown = fds.find((fd) => !this.#adopted.has(fd));
    if (unknown !== undefined) throw new Error(`closeAdopted: fd ${unknown} was not adopted`);
    // A list closeClientFds refuses (it throws at once, nothing closed) leaves them adopted: close() still closes them.
    const closed = this.context.closeClientFds(fds);
    for (const fd of fds) this.#adopted.delete(fd);
    return closed;
  }

  /** This process's open-fd table, as [fd, target] rows. */
  openFds(): Array<[number, string]> {
    return [...openFdTable()];
  }

  /**
   * Which fd numbers a freshly exec'd program sees open (its own listing of
   * /proc/self/fd), to prove close-on-exec by exec.
   */
  fdsSeenByExec(): number[] {
    const r = spawnSync('/bin/ls', ['/proc/self/fd'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ls /proc/self/fd failed: ${r.stderr}`);
    // Stryker disable next-line Regex: ls writing to a pipe prints one name a line, so no run of whitespace for `/\s/` to split apart (`/\S+/` is killed)
    const names = r.stdout.split(/\s+/);
    return names.filter((s) => s !== '').map(Number);
  }

  fdLimit(): [number, number] {
    return fdLimit();
  }

  setFdLimit(soft: number): void {
    setFdLimit(soft);
  }

  /**
   * Keeps the command's thread busy for `ms` milliseconds without yielding
   * (nothing else is read or answered meanwhile), like a command stuck in
   * synchronous work.
   */
  block(ms: number): number {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    return ms;
  }

  /** Answers `value` after `ms` milliseconds, without blocking. */
  later<T>(ms: number, value: T): Promise<T> {
    return new Promise((resolve) => setTimeout(() => resolve(value), ms));
  }

  /** Never answers (to test callers against a peer that dies mid-request). */
  hang(): Promise<never> {
    return new Promise(() => undefined);
  }

  /** Throws an error with a code. */
  fail(message: string, code?: string): never {
    throw Object.assign(new Error(message), code ? { code } : {});
  }

  /** Ends the process (or, in a worker, the thread) at once. */
  exit(code: number): never {
    process.exit(code);
  }

  close(): void {
    const adopted = [...this.#adopted];
    this.#adopted.clear();
    // Not waited for: the connection's end never waits on a close the client can make block.
    try {
      void this.context.closeClientFds(adopted);
    } catch {
      // One of them is not the client's any more (closed behind the
      // command's back, its number free or another file's): the others
      // one by one, that one left alone.
      for (const fd of adopted) {
        try {
          void this.context.closeClientFds([fd]);
        } catch {
          // not the client's
        }
      }
    }
  }
}

/** The spec naming ProbeCommand. */
export const PROBE_COMMAND: ModuleCommandSpec = { name: 'probe', module: distPath('src/commands/probe-command.js'), export: 'ProbeCommand' };
