/**
 * A datagram socket bound at a relative path was reported by that relative
 * path (its `address`, and receivers' `from`), which a receiver in another
 * working directory resolves to another socket: its reply, fds included,
 * went there. Now bind makes the path absolute (path.resolve); one that
 * does not fit sun_path that way is a RangeError saying so.
 *
 * Generated: the relative name's components; a second socket bound at the
 * same relative name from the service's directory must get nothing.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import fc from 'fast-check';

import { DatagramSocket } from '../../src';
import { MAX_SOCKET_PATH_BYTES } from '../../src/testing';
import { closeFds, makeMemfd, openFdTable } from '../../src/fd';

let base: string;
const cwd = process.cwd();
beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'fdbridge-attack-rel-'));
});
afterAll(() => {
  process.chdir(cwd);
  rmSync(base, { recursive: true, force: true });
});

const component = fc.stringMatching(/^[a-z0-9_-]{1,12}$/);
let run = 0;

test('generated: a relative bind is the absolute path: `address` and `from` name it, and a reply from another directory reaches it', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(component, { minLength: 1, maxLength: 3 }), async (parts) => {
      const n = run++;
      const svcDir = join(base, `s${n}`);
      const cliDir = join(base, `c${n}`);
      mkdirSync(svcDir, { mode: 0o700 });
      mkdirSync(cliDir, { mode: 0o700 });
      const rel = join(...parts, 'x.sock');
      // bind makes the last directory only (private, 0700): the ones above it are the test's.
      mkdirSync(dirname(join(svcDir, rel, '..')), { recursive: true, mode: 0o700 });
      mkdirSync(dirname(join(cliDir, rel, '..')), { recursive: true, mode: 0o700 });
      const before = openFdTable();
      const memfd = makeMemfd();
      let service: DatagramSocket | undefined;
      let other: DatagramSocket | undefined;
      let client: DatagramSocket | undefined;
      try {
        process.chdir(svcDir);
        service = DatagramSocket.bind(join(svcDir, 'svc.sock'));
        other = DatagramSocket.bind(rel);
        process.chdir(cliDir);
        client = DatagramSocket.bind(rel);
        process.chdir(svcDir);
        expect(client.address).toBe(join(cliDir, rel));
        await client.sendTo(service.address!, Buffer.from('hi'));
        const d = await service.receive();
        expect(d.from).toBe(join(cliDir, rel));
        await service.sendTo(d.from as string, Buffer.from('reply'), [memfd]);
        await service.sendTo(other.address!, Buffer.from('marker'));
        const got = await other.receive();
        closeFds(got.fds);
        expect(got.data.toString()).toBe('marker');
        const r = await client.receive();
        closeFds(r.fds);
        expect([r.data.toString(), r.fds.length]).toEqual(['reply', 1]);
      } finally {
        process.chdir(cwd);
        closeFds([memfd]);
        await service?.close();
        await other?.close();
        await client?.close();
      }
      expect(openFdTable()).toEqual(before);
    }),
    { numRuns: 15 },
  );
});

test('a relative path that fits sun_path but not once made absolute is a RangeError saying so, nothing bound', async () => {
  const before = openFdTable();
  const deep = join(base, 'd'.repeat(60));
  mkdirSync(deep, { mode: 0o700 });
  process.chdir(deep);
  let bound: DatagramSocket | undefined;
  let err: unknown;
  try {
    bound = DatagramSocket.bind('r'.repeat(MAX_SOCKET_PATH_BYTES - 4));
  } catch (e) {
    err = e;
  } finally {
    process.chdir(cwd);
  }
  await bound?.close();
  expect(err).toBeInstanceOf(RangeError);
  expect(String(err)).toMatch(/bytes made absolute \(.*\); sun_path holds at most 107, and a relative name cannot be answered/);
  expect(readdirSync(deep)).toEqual([]);
  expect(openFdTable()).toEqual(before);
});

test('generated: a relative path binds while its absolute path fits sun_path (up to the last byte), and is a RangeError one byte past', async () => {
  const dir = join(base, 'edge');
  mkdirSync(dir, { mode: 0o700 });
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: -3, max: 3 }), async (past) => {
      const before = openFdTable();
      // dir/<name>: the name's length puts the absolute path `past` bytes beyond the limit.
      const rel = 'e'.repeat(MAX_SOCKET_PATH_BYTES + past - Buffer.byteLength(dir) - 1);
      process.chdir(dir);
      let bound: DatagramSocket | undefined;
      let err: unknown;
      try {
        bound = DatagramSocket.bind(rel, { privateDir: false });
      } catch (e) {
        err = e;
      } finally {
        process.chdir(cwd);
      }
      const address = bound?.address;
      await bound?.close();
      if (past <= 0) {
        expect(err).toBeUndefined();
        expect(address).toBe(join(dir, rel));
      } else {
        expect(err).toBeInstanceOf(RangeError);
      }
      expect(readdirSync(dir)).toEqual([]);
      expect(openFdTable()).toEqual(before);
    }),
    { numRuns: 20 },
  );
});
