/**
 * How connect on the child transport ends when the command's process does
 * not get to READY, told apart by what the process did: it died before it
 * read HELLO (the kernel resets the connection: HELLO was left unread), it
 * closed its end of the socket and lives on, or it answered with its
 * command's error and exited right after. Each ends in its own typed error,
 * the process is gone afterwards (killed where it lived on), and this
 * process's fd table is the same.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import fc from 'fast-check';

import { connect, EofError, PeerExitedError, RemoteError } from '../../src';
import { openFdTable } from '../../src/fd';
import { afterCommandProcessSpawn } from '../../src/test-hooks';
import { childrenOf, fdTableSettles } from '../util/processes';
import { scaled } from '../util/time-scale';

const ROOT = join(__dirname, '..', '..');
const THROWING = { module: join(__dirname, '..', 'fixtures', 'throwing-command.js'), export: 'ThrowingCommand' };

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-child-ends-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The addon file this process loaded (the child loads the same one). */
function addonFile(): string {
  const named = process.env['FDBRIDGE_ADDON'];
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return named !== undefined && named !== '' ? resolve(ROOT, named) : (require('node-gyp-build') as { resolve(dir: string): string }).resolve(ROOT);
}

/** connect's error (a connection made is closed and reported), with the pid of the process it spawned. */
async function failedConnect(options: Parameters<typeof connect>[1]): Promise<{ err: unknown; pid: number | undefined }> {
  let pid: number | undefined;
  afterCommandProcessSpawn((p) => (pid = p));
  try {
    const conn = await connect('child', options);
    await conn.close();
    return { err: 'connected', pid };
  } catch (err) {
    return { err, pid };
  } finally {
    afterCommandProcessSpawn(undefined);
  }
}

test('generated: a process that exits or is killed before it reads HELLO fails connect with PeerExitedError saying how it ended', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.integer({ min: 1, max: 255 }).map((code) => ({ code })), fc.constantFrom<NodeJS.Signals>('SIGTERM', 'SIGKILL', 'SIGHUP').map((signal) => ({ signal }))), async (end) => {
      // Loaded by NODE_OPTIONS before the child's entry: it waits until HELLO
      // is in the connection (fd 3) and ends the process without reading it.
      const preload = join(dir, `before-hello-${'code' in end ? end.code : end.signal}.js`);
      writeFileSync(
        preload,
        `const addon = require(${JSON.stringify(addonFile())});\n` +
          `while (!addon.pollReadable([3])[0]) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);\n` +
          ('code' in end ? `process.exit(${end.code});\n` : `process.kill(process.pid, '${end.signal}');\nAtomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);\n`),
      );
      const nodeOptions = `${process.env['NODE_OPTIONS'] ?? ''} --require ${preload}`.trim();
      const { err, pid } = await failedConnect({ command: { module: THROWING.module, export: 'Nothing' }, child: { env: { NODE_OPTIONS: nodeOptions } } });
      expect(err).toBeInstanceOf(PeerExitedError);
      expect(err).toMatchObject({ transport: 'child', pid, exitCode: 'code' in end ? end.code : null, signal: 'signal' in end ? end.signal : null });
      expect((err as Error).message).toMatch(/^connect failed: the child process \(pid \d+\) /);
      expect(childrenOf(process.pid)).toEqual([]);
    }),
    { numRuns: 4 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, scaled(60_000));

test('a process that closes its end of the connection and lives on: EofError, and the process is killed', async () => {
  const before = openFdTable();
  const module = join(dir, 'closes-and-hangs.js');
  writeFileSync(module, `require('node:fs').closeSync(3);\nAtomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);\n`);
  const { err } = await failedConnect({ command: { module, export: 'Nothing' } });
  expect(err).toBeInstanceOf(EofError);
  expect(err).not.toBeInstanceOf(PeerExitedError);
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test("a command whose constructor throws, its process exiting right after it answers: RemoteError with the command's error, not PeerExitedError", async () => {
  const before = openFdTable();
  const { err } = await failedConnect({ command: THROWING });
  expect(err).toBeInstanceOf(RemoteError);
  expect(err).toMatchObject({ method: 'constructor', remote: { code: 'E_REFUSES' } });
  expect(childrenOf(process.pid)).toEqual([]);
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
