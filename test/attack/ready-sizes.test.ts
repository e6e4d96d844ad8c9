/**
 * A command whose constructor leaves any number of fds open, of any target
 * length, is served: its process's READY (constructorFds, what the leak
 * check charges to the constructor) fits one frame, each target cut past
 * READY_TARGET_BYTES and saying so, the entries past the frame left out and
 * counted (constructorFdsOmitted). On child and pidfd the READY used to
 * throw out of its encoding once the list passed MAX_FRAME_BYTES, and the
 * command's process died: connect failed with a PeerExitedError. The remote
 * transport's READY goes through the same encoder, and its client through
 * the same decoder. (A helper daemon's READY names no fds: its other
 * clients' commands run beside a constructor.)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, openFdTable, type TransportName } from '../../src';
import { isCutOf } from '../../src/errors';
import { READY_TARGET_BYTES } from '../../src/protocol';
import { LOCAL_REMOTE } from '../../harness/local-remote';
import { fdTableSettles } from '../util/processes';
import { fileOfLength } from '../util/long-path';

const FIXTURE = join(__dirname, 'fixtures', 'many-fds-command.js');
const TRANSPORTS: TransportName[] = ['child', 'pidfd', 'remote'];

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-ready-sizes-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});


test.each(TRANSPORTS)('%s: generated: a constructor leaving N fds open, of any path length, is served, its READY naming them all, some cut or counted as left out', async (transport) => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.nat(60), fc.integer({ min: 40, max: 7000 })), fc.integer({ min: 1, max: 4000 }), async (count, length) => {
      const path = fileOfLength(dir, length);
      const conn = await connect(transport, {
        command: { module: FIXTURE, export: 'ManyFdsCommand', args: [path, count] },
        ...(transport === 'remote' ? LOCAL_REMOTE : {}),
      });
      try {
        expect(await conn.call('held')).toBe(count);
        const named = conn.location.constructorFds ?? [];
        const omitted = conn.location.constructorFdsOmitted ?? 0;
        // Absent when none is left out, never 0.
        expect({ total: named.length + omitted, zeroOmitted: conn.location.constructorFdsOmitted === 0 }).toEqual({ total: count, zeroOmitted: false });
        const cut = Buffer.byteLength(JSON.stringify(path)) > READY_TARGET_BYTES;
        for (const e of named) expect({ cutOf: isCutOf(e.target, path), cut: e.target !== path }).toEqual({ cutOf: true, cut });
        expect(new Set(named.map((e) => e.fd)).size).toBe(named.length);
      } finally {
        await conn.close();
      }
    }),
    { numRuns: 8 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 600_000);

test('remote: a constructor\'s fds whose READY would pass the channel\'s largest frame (64 MiB: 17,000 fds of a 4,000-byte path) are named, each target cut', async () => {
  const before = openFdTable();
  const path = fileOfLength(dir, 4000);
  const count = 17_000;
  const conn = await connect('remote', { command: { module: FIXTURE, export: 'ManyFdsCommand', args: [path, count] }, ...LOCAL_REMOTE, timeoutMs: 120_000 });
  try {
    expect(await conn.call('held')).toBe(count);
    const named = conn.location.constructorFds ?? [];
    expect(named.length + (conn.location.constructorFdsOmitted ?? 0)).toBe(count);
    expect(named.every((e) => isCutOf(e.target, path) && e.target !== path)).toBe(true);
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 600_000);
