/**
 * A JS record is confirmed current (FdOrigin.nativeCurrent) only while the
 * process has no io_uring ring that can make fds: such a ring opens and
 * closes fds neither recorder sees. libuv's ring for epoll_ctl alone (each
 * loop's, Node 22 and later) cannot, and is left out; another ring of its
 * shape (256 entries, no flags, as liburing's io_uring_queue_init(256,
 * &ring, 0) makes) can, and must not pass for libuv's. Each case runs a
 * Node child under the recorders that opens a file with fs.openSync, then,
 * through a small addon built here (a module that is not libuv):
 * - none: no ring of its own. Confirmed, with libuv's rings open on Node 22+.
 * - libc: a ring of that shape set up through the C library's syscall(),
 *   closed again before the check: not confirmed (the recorder saw it set
 *   up). libc-open: the same, left open; its record names its module.
 * - raw: one set up past the interposer (libc's syscall() called directly,
 *   as liburing makes its system calls), still open: not confirmed.
 * - stale (Node 22+, whose loops have rings): a worker's loop ring closed
 *   by libuv as the worker ends, then a raw ring put at its number: not
 *   confirmed (the record libuv's ring left there vouches for nothing).
 * - hold: fdbridge's FdTableHold, whose thread opens references in an fd
 *   table of its own, up past the file's number: nothing it does there
 *   touches the process's records (it would have replaced the file's record,
 *   as it would a libuv ring's): still confirmed, with no native frames.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { openFdTable } from '../../src/fd';
import { fdOrigin, fdtrackLibrary, trackingEnvironment } from '../../src/fd-track';
import { packageRoot } from '../../src/paths';

/** The addon: N-API declared by hand (a module needs no headers to be loaded by process.dlopen). */
const ADDON = `#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef napi_value (*napi_callback)(napi_env, napi_callback_info);
extern int napi_get_cb_info(napi_env, napi_callback_info, size_t *, napi_value *, napi_value *, void **);
extern int napi_get_value_int32(napi_env, napi_value, int *);
extern int napi_create_int32(napi_env, int, napi_value *);
extern int napi_create_function(napi_env, const char *, size_t, napi_callback, void *, napi_value *);
extern int napi_set_named_property(napi_env, napi_value, const char *, napi_value);

/* The C library's own syscall(), not the interposer's: found in libc's handle. */
static long (*raw)(long, ...);

static int arg(napi_env env, napi_callback_info info) {
  size_t n = 1;
  napi_value v;
  int x = -1;
  napi_get_cb_info(env, info, &n, &v, NULL, NULL);
  if (n > 0) napi_get_value_int32(env, v, &x);
  return x;
}

static napi_value num(napi_env env, long x) {
  napi_value v;
  napi_create_int32(env, (int)x, &v);
  return v;
}

/* libuv's epoll_ctl ring's shape: 256 entries, no flags. */
static napi_value libc_ring(napi_env env, napi_callback_info info) {
  (void)info;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  return num(env, syscall(SYS_io_uring_setup, 256, &p));
}

/* The same, past the interposer; at number \`at\` (which must be free) when \`at\` >= 0. */
static napi_value raw_ring(napi_env env, napi_callback_info info) {
  int at = arg(env, info);
  if (at >= 0 && raw(SYS_fcntl, at, F_GETFD) >= 0) return num(env, -1);
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  long fd = raw(SYS_io_uring_setup, 256, &p);
  if (fd >= 0 && at >= 0 && fd != at) {
    long moved = raw(SYS_dup3, fd, at, O_CLOEXEC);
    raw(SYS_close, fd);
    fd = moved;
  }
  return num(env, fd);
}

static napi_value raw_close(napi_env env, napi_callback_info info) { return num(env, raw(SYS_close, arg(env, info))); }

napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  raw = (long (*)(long, ...))dlsym(dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD), "syscall");
  const struct { const char *name; napi_callback fn; } fns[] = {{"libcRing", libc_ring}, {"rawRing", raw_ring}, {"rawClose", raw_close}};
  for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, (size_t)-1, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  return exports;
}
`;

/** The child: opens `file`, does what `mode` says, prints what the test reads, and stays until its stdin ends. */
const CHILD = `
  const fs = require('node:fs');
  const { Worker } = require('node:worker_threads');
  const [addon, file, mode] = process.argv.slice(1);
  const m = { exports: {} };
  process.dlopen(m, addon);
  const rings = m.exports;
  const ringFds = () => fs.readdirSync('/proc/self/fd').map(Number).filter((fd) => {
    try { return fs.readlinkSync('/proc/self/fd/' + fd) === 'anon_inode:[io_uring]'; } catch { return false; }
  });
  const report = (r) => { process.stdout.write(JSON.stringify({ pid: process.pid, fd, loopRings: ringFds().length, ...r }) + '\\n'); process.stdin.resume(); };
  const fd = fs.openSync(file, 'r');
  if (mode === 'none') report({});
  if (mode === 'libc' || mode === 'libc-open') {
    const ring = rings.libcRing();
    if (ring < 0 || (mode === 'libc' && rings.rawClose(ring) !== 0)) throw new Error('libcRing: ' + ring);
    report(mode === 'libc' ? {} : { ring });
  }
  if (mode === 'raw') {
    const ring = rings.rawRing(-1);
    if (ring < 0) throw new Error('rawRing: ' + ring);
    report({ ring });
  }
  if (mode === 'hold') {
    const { FdTableHold, openFdTable } = require(${JSON.stringify(join(packageRoot, 'dist', 'src', 'fd.js'))});
    // Files enough that the hold's thread, opening one reference a file held
    // in its own table from 1 up (the /proc directory at 0), opens one at fd.
    const extra = Array.from({ length: 64 }, () => fs.openSync('/dev/null', 'r'));
    const hold = new FdTableHold(openFdTable());
    if (hold.thread === undefined || !hold.release()) throw new Error('no hold');
    for (const e of extra) fs.closeSync(e);
    report({});
  }
  if (mode === 'stale') {
    const before = new Set(ringFds());
    const worker = new Worker("require('node:worker_threads').parentPort.postMessage('up'); setInterval(() => {}, 1000)", { eval: true });
    worker.once('message', async () => {
      const its = ringFds().filter((r) => !before.has(r));
      await worker.terminate();
      if (its.length === 0 || ringFds().some((r) => its.includes(r))) throw new Error('the worker\\'s loop rings: ' + its);
      const ring = rings.rawRing(its[0]);
      if (ring !== its[0]) throw new Error('rawRing(' + its[0] + '): ' + ring);
      report({ ring });
    });
  }
  process.stdin.on('end', () => process.exit(0));
`;

/** Node 22 and later give every event loop an io_uring ring for epoll_ctl (libuv 1.45+). */
const loopRings = Number(process.versions.node.split('.')[0]) >= 22;

let dir: string;
let addon: string;
let file: string;
let library: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-track-rings-'));
  const src = join(dir, 'rings.c');
  writeFileSync(src, ADDON);
  addon = join(dir, 'rings.node');
  execFileSync('cc', ['-O0', '-g', '-fPIC', '-fno-omit-frame-pointer', '-shared', '-Wall', '-o', addon, src, '-ldl']);
  file = join(dir, 'opened');
  writeFileSync(file, '');
  const built = fdtrackLibrary(dir);
  if (built.path === undefined) throw new Error(`the interposer could not be built: ${built.unavailable}`);
  library = built.path;
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Report {
  pid: number;
  fd: number;
  loopRings: number;
  ring?: number;
}

/** Runs the child in `mode`, and gives what fdOrigin says of its file's fd (and of its ring's) while it still runs. */
async function run(mode: string): Promise<{ report: Report; opened: ReturnType<typeof fdOrigin>; ring: ReturnType<typeof fdOrigin> }> {
  const child = spawn(process.execPath, ['-e', CHILD, addon, file, mode], {
    env: { ...process.env, ...trackingEnvironment(dir, library, process.env) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  try {
    let out = '';
    child.stdout!.setEncoding('utf8');
    const report = await new Promise<Report>((resolve, reject) => {
      child.stdout!.on('data', (d: string) => {
        out += d;
        if (out.includes('\n')) resolve(JSON.parse(out) as Report);
      });
      child.once('exit', (code) => reject(new Error(`the child (${mode}) exited (${code}) before reporting: ${stderr}`)));
    });
    return {
      report,
      opened: fdOrigin(dir, report.pid, report.fd, file),
      ring: report.ring === undefined ? undefined : fdOrigin(dir, report.pid, report.ring, 'anon_inode:[io_uring]'),
    };
  } finally {
    child.stdin!.end();
    await exited;
  }
}

let before: ReturnType<typeof openFdTable>;
beforeEach(() => {
  before = openFdTable();
});
afterEach(() => {
  expect(openFdTable()).toEqual(before);
});

test("no ring of the program's own: the record is confirmed, libuv's loop rings (Node 22+) left out", async () => {
  const { report, opened } = await run('none');
  expect(report.loopRings > 0).toBe(loopRings);
  expect(opened).toMatchObject({ call: 'fs.openSync', nativeCurrent: true });
});

test("a ring of libuv's shape set up through the C library by another module: not confirmed, though closed by the check", async () => {
  const { opened } = await run('libc');
  expect(opened).toMatchObject({ call: 'fs.openSync' });
  expect(opened?.nativeCurrent).toBeUndefined();
});

test("the same ring left open: not confirmed; its record names its call and the module that set it up, not libuv", async () => {
  const { opened, ring } = await run('libc-open');
  expect(opened).toMatchObject({ call: 'fs.openSync' });
  expect(opened?.nativeCurrent).toBeUndefined();
  expect(ring?.call).toBe('io_uring_setup');
  expect(ring?.native?.[0]).toMatch(/^libc_ring \(.*\/rings\.c:\d+\)$/);
});

test("a ring of libuv's shape set up past the C library, open at the check: not confirmed", async () => {
  const { opened, ring } = await run('raw');
  expect(opened).toMatchObject({ call: 'fs.openSync' });
  expect(opened?.nativeCurrent).toBeUndefined();
  // Nothing recorded it: the ring read as libuv's would only be by its shape.
  expect(ring).toBeUndefined();
});

(loopRings ? test : test.skip)("a raw ring at the number of a worker's loop ring, closed as the worker ended: libuv's record there vouches for nothing", async () => {
  const { opened, ring } = await run('stale');
  expect(opened).toMatchObject({ call: 'fs.openSync' });
  expect(opened?.nativeCurrent).toBeUndefined();
  expect(ring).toBeUndefined();
});

test("a thread with an fd table of its own (fdbridge's hold) opening at the file's number: the record stays the file's", async () => {
  const { opened } = await run('hold');
  expect(opened).toMatchObject({ call: 'fs.openSync', nativeCurrent: true });
  expect(opened?.native).toBeUndefined();
});
