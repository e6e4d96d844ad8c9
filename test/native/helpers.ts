/**
 * Shared helpers for the native suites. Every resource a test opens goes
 * through a Scope, which closes it when the test ends (pass or fail), so a
 * failing test never leaks into the next one. Closing is idempotent: a test
 * may close things itself first (it usually does, to check what happens).
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants as fsConstants, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { SystemError } from '../../src/errors';
import { diffFdTables, formatFdTableDiff, OwnedFd, openFdTable, ownedFdOfFdbridge, type FdTable, type FdTableDiff } from '../../src/fd';
import { packageRoot } from '../../src/paths';
import { native } from './binding';
import { settleFdTable } from '../util/settle';

export class Scope {
  #cleanups: Array<() => void> = [];

  /**
   * Takes ownership of a raw fd a native call made (some, pidfdGetfd's and
   * dupHigh's, registered as fdbridge's: so as fdbridge's own paths take
   * them, ownedFdOfFdbridge); closed at the end of the test unless closed
   * before.
   */
  own(fd: number): OwnedFd {
    const owned = ownedFdOfFdbridge(fd);
    this.#cleanups.push(() => owned.close());
    return owned;
  }

  ownAll(fds: readonly number[]): OwnedFd[] {
    return fds.map((fd) => this.own(fd));
  }

  /** Anything with an idempotent close() (UnixSocket, UnixServer, OwnedFd). */
  add<T extends { close(): void }>(thing: T): T {
    this.#cleanups.push(() => thing.close());
    return thing;
  }

  defer(fn: () => void): void {
    this.#cleanups.push(fn);
  }

  /** A private temporary directory, removed at the end of the test. */
  dir(): string {
    // Short prefix: socket paths built under it must stay below 108 bytes.
    const path = mkdtempSync(join(tmpdir(), 'fdb-'));
    this.#cleanups.push(() => rmSync(path, { recursive: true, force: true }));
    return path;
  }

  /** A fresh regular file opened read-write (offset 0). */
  file(name = 'file'): { path: string; fd: OwnedFd } {
    const path = join(this.dir(), name);
    return { path, fd: this.own(openSync(path, 'w+')) };
  }

  /**
   * A pipe (a FIFO: the same pipe_inode_info as pipe(2), but creatable from
   * Node): both ends non-blocking, so an empty pipe reads EAGAIN while a
   * writer exists and end-of-file once every writer is closed.
   */
  pipe(): { read: OwnedFd; write: OwnedFd } {
    const path = join(this.dir(), 'fifo');
    execFileSync('mkfifo', [path]);
    // Opening the read end first, non-blocking, lets the write end open at once.
    const read = this.own(openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK));
    const write = this.own(openSync(path, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK));
    return { read, write };
  }

  /** Kills the child at the end of the test if it is still running. */
  child<T extends ChildProcess>(child: T): T {
    this.#cleanups.push(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    return child;
  }

  dispose(): void {
    const errors: unknown[] = [];
    for (const fn of this.#cleanups.splice(0).reverse()) {
      try {
        fn();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw errors[0];
  }
}

/** Runs `fn` with a Scope that is disposed however `fn` ends. */
export async function withScope<T>(fn: (s: Scope) => T | Promise<T>): Promise<T> {
  const s = new Scope();
  try {
    return await fn(s);
  } finally {
    s.dispose();
  }
}

/**
 * Resolves once every background close open now is done (native.afterBackgroundCloses):
 * e.g. the copies of the fds of queued sends that failed, which a socket
 * hands to the closer (one can be its file's last reference, whose close
 * can block).
 */
export function openBackgroundClosesDone(): Promise<void> {
  const open = native.openBackgroundCloses();
  return new Promise((resolve) => native.afterBackgroundCloses(open, resolve));
}

/** What a non-blocking read of a pipe end says: data, 'eof', or 'empty' (EAGAIN). */
export function readPipe(fd: number): string | 'eof' | 'empty' {
  const buf = Buffer.alloc(4096);
  try {
    const n = readSync(fd, buf, 0, buf.length, null);
    return n === 0 ? 'eof' : buf.subarray(0, n).toString();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return 'empty';
    throw err;
  }
}

/**
 * Waits for the open-fd table to equal `before` and returns the remaining
 * difference (empty when it settled), giving up once this process's other
 * threads have sat idle for `ms` (test/util/settle.ts). For closes that
 * happen asynchronously: a worker's exit, a child's pipes.
 */
export function settledFdTableDiff(before: FdTable, ms = 5000): Promise<FdTableDiff> {
  return settleFdTable(process.pid, before, ms, 10);
}

/** Asserts that the table equals `before` now (synchronous operations only). */
export function expectFdTable(before: FdTable): void {
  const diff = diffFdTables(before, openFdTable());
  expect(formatFdTableDiff(diff)).toBe('');
}

/** Runs `fn` and returns what it threw (fails the test if it did not throw). */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to throw');
}

/** Awaits a promise that must reject and returns the rejection reason. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

export function expectSystemError(err: unknown, code: string, syscall?: string): void {
  expect(err).toBeInstanceOf(SystemError);
  const e = err as SystemError;
  expect(e.code).toBe(code);
  expect(e.errno).toBeLessThan(0);
  if (syscall !== undefined) expect(e.syscall).toBe(syscall);
  // The message names the call (and, unless it says more precisely, the errno).
  expect(e.message).toContain(e.syscall);
}

/** The compiled package (dist/), which fixtures that run as plain JS require. */
export function distFile(rel: string): string {
  const path = join(packageRoot, 'dist', rel);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: run \`npx tsc -p .\` (npm test does) before jest`);
  }
  return path;
}

export const fixture = (name: string): string => join(packageRoot, 'test', 'fixtures', name);

/**
 * Builds test/native/NAME.cc with `sources` (files in native/), C++17 with
 * assertions on and warnings as errors (`sanitize`: with ASan and UBSan);
 * returns the program's path. The program runs no Node: it is built once
 * for its inputs (the compiler and its version, the flags, test/native/NAME.cc,
 * `sources` and every header in native/) into build/native-tests/, and the
 * runs of the suite on other Nodes, or the next run, use that build.
 * A build is written under a name of its own and renamed into place, so two
 * suites building it at once each get a whole program.
 */
export function compileNativeTest(name: string, sources: readonly string[], sanitize: boolean): string {
  const cxx = process.env['CXX'] || 'g++';
  const native = join(packageRoot, 'native');
  const inputs = [join(packageRoot, 'test', 'native', `${name}.cc`), ...sources.map((s) => join(native, s))];
  const flags = ['-std=c++17', '-g', '-Wall', '-Wextra', '-Werror', ...(sanitize ? ['-fsanitize=address,undefined', '-fno-sanitize-recover=all'] : []), '-I', native];
  const hash = createHash('sha256');
  hash.update(JSON.stringify([cxx, execFileSync(cxx, ['--version'], { encoding: 'utf8' }), flags, inputs]));
  const headers = readdirSync(native).filter((f) => f.endsWith('.h')).sort().map((f) => join(native, f));
  for (const file of [...inputs, ...headers]) hash.update(readFileSync(file));
  const dir = join(packageRoot, 'build', 'native-tests');
  const program = join(dir, `${name}-${hash.digest('hex').slice(0, 16)}`);
  if (existsSync(program)) return program;
  mkdirSync(dir, { recursive: true });
  const building = `${program}.${process.pid}.tmp`;
  try {
    execFileSync(cxx, [...flags, '-o', building, ...inputs, '-pthread']);
    renameSync(building, program);
  } finally {
    rmSync(building, { force: true });
  }
  return program;
}

/** Unique abstract socket name for this process and test. */
let abstractCounter = 0;
export function abstractName(tag: string): string {
  abstractCounter += 1;
  return `fdbridge-test-${process.pid}-${tag}-${abstractCounter}-${Math.random().toString(36).slice(2)}`;
}

/**
 * Asserts a RangeError. The addon throws from Node's main realm, while jest
 * runs each test file in its own vm context with its own RangeError, so
 * `instanceof` cannot be used across the two.
 */
export function expectRangeError(err: unknown, message?: RegExp): void {
  expect(Object.prototype.toString.call(err)).toBe('[object Error]');
  expect((err as Error).name).toBe('RangeError');
  expect(Object.getPrototypeOf(err)?.constructor?.name).toBe('RangeError');
  if (message) expect((err as Error).message).toMatch(message);
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Collects a child's output; resolves on 'close' (exited and every stdio pipe closed). */
export function collect(child: ChildProcess): Promise<ChildResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The last line of a child's stdout, parsed as JSON (with the output in the error if it is not). */
export function lastJson<T>(r: ChildResult): T {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(`child (code ${r.code}, signal ${r.signal}) printed no JSON:\n${r.stdout}\n${r.stderr}`);
  }
}
