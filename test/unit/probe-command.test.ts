/**
 * The probe command's methods, each answer checked against what this side
 * sees of the same fds and process: on the direct transport the command
 * runs in this thread, so its fd numbers, open-fd table, limits and exec'd
 * programs are this process's, and every answer has one right value here.
 * exit() ends its process, so it runs on the child transport. Generated
 * values where they vary; the fd table is the same afterwards.
 */
import { spawnSync } from 'node:child_process';
import { readSync, writeSync } from 'node:fs';
import { threadId } from 'node:worker_threads';

import fc from 'fast-check';

import { ClosedError, connect, PeerExitedError, PROBE_COMMAND, RemoteError, type Connection } from '../../src';
import { closeFd, closeFds, fdFlags, fdIdentity, fdLimit, isFdOpen, makeMemfd, makePipe, openFdTable, setFdLimit } from '../../src/fd';
import { fdTableSettles } from '../util/processes';

/** A direct connection to the probe command for `body`; closed after, and the fd table checked. */
async function withProbe(body: (conn: Connection) => Promise<void>): Promise<void> {
  const before = openFdTable();
  const conn = await connect('direct', { command: PROBE_COMMAND });
  try {
    await body(conn);
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}

test('the spec names the probe command, and where() is the thread it runs in', async () => {
  expect(PROBE_COMMAND.name).toBe('probe');
  expect(PROBE_COMMAND.export).toBe('ProbeCommand');
  await withProbe(async (conn) => {
    expect(await conn.call('where')).toEqual({ transport: 'direct', pid: process.pid, threadId });
  });
});

test('generated: echo() answers its value', async () => {
  await withProbe(async (conn) => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), async (value) => {
        expect(await conn.call('echo', value)).toEqual(JSON.parse(JSON.stringify(value)));
      }),
      { numRuns: 40 },
    );
  });
});

test("generated: identities() and flags() are the duplicated fds' own, in order", async () => {
  await withProbe(async (conn) => {
    const files = [makeMemfd('probe-a'), ...makePipe()];
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(fc.constantFrom(...files), { minLength: 0, maxLength: 5 }), async (picked) => {
          const copies = await conn.dupFileDescriptors(picked);
          expect(await conn.call('identities', copies)).toEqual(
            picked.map((fd) => {
              const id = fdIdentity(fd);
              return { dev: String(id.dev), ino: String(id.ino), type: id.type };
            }),
          );
          expect(await conn.call('flags', copies)).toEqual(copies.map((fd) => fdFlags(fd)));
          await conn.call('adopt', copies);
          await conn.call('closeAdopted', copies);
        }),
        { numRuns: 25 },
      );
    } finally {
      closeFds(files);
    }
  });
});

test('generated: write() puts the text through the fd and says how many bytes; read() gives back up to max bytes of it', async () => {
  await withProbe(async (conn) => {
    const [r, w] = makePipe();
    try {
      const [rCopy, wCopy] = await conn.dupFileDescriptors([r, w]);
      await fc.assert(
        fc.asyncProperty(fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' }), fc.integer({ min: 1, max: 200 }), async (text, max) => {
          const bytes = Buffer.byteLength(text);
          expect(await conn.call('write', wCopy, text)).toBe(bytes);
          const buf = Buffer.alloc(bytes);
          expect(readSync(r, buf, 0, bytes, null)).toBe(bytes);
          expect(buf.toString()).toBe(text);
          // Through the command: ASCII, so that a cut at max bytes is a cut at max characters.
          const ascii = Buffer.from(text).toString('hex');
          writeSync(w, ascii);
          const got = await conn.call<string>('read', rCopy, max);
          expect(got).toBe(ascii.slice(0, max));
          const rest = Buffer.alloc(ascii.length);
          const n = ascii.length > max ? readSync(r, rest, 0, rest.length, null) : 0;
          expect(rest.toString('utf8', 0, n)).toBe(ascii.slice(max));
        }),
        { numRuns: 30 },
      );
      await conn.call('adopt', [rCopy, wCopy]);
      await conn.call('closeAdopted', [rCopy, wCopy]);
    } finally {
      closeFds([r, w]);
    }
  });
});

test('generated: adopt() answers how many it took; closeAdopted() closes exactly those named, and refuses, closing none, a list with one it did not adopt', async () => {
  await withProbe(async (conn) => {
    const file = makeMemfd('probe-adopt');
    try {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 6 }), fc.nat(), async (n, pick) => {
          const copies = await conn.dupFileDescriptors(Array.from({ length: n }, () => file));
          expect(await conn.call('adopt', copies)).toBe(n);
          const [stranger] = await conn.dupFileDescriptors([file]);
          const named = copies.slice(0, 1 + (pick % n));
          const refused = await conn.call('closeAdopted', [...named, stranger]).catch((e: unknown) => e);
          expect(refused).toBeInstanceOf(RemoteError);
          expect((refused as RemoteError).remote.message).toBe(`closeAdopted: fd ${stranger} was not adopted`);
          expect(copies.every((fd) => isFdOpen(fd))).toBe(true);
          await conn.call('closeAdopted', named);
          expect(copies.map((fd) => isFdOpen(fd))).toEqual(copies.map((fd) => !named.includes(fd)));
          // Closed ones are adopted no longer: naming one again is refused.
          const again = await conn.call('closeAdopted', named.slice(0, 1)).catch((e: unknown) => e);
          expect((again as RemoteError).remote.message).toBe(`closeAdopted: fd ${named[0]} was not adopted`);
          await conn.call('closeAdopted', copies.slice(named.length));
          await conn.call('adopt', [stranger]);
          await conn.call('closeAdopted', [stranger]);
        }),
        { numRuns: 20 },
      );
    } finally {
      closeFd(file);
    }
  });
});

test('close() closes every fd still adopted, those closed behind its back left alone', async () => {
  const before = openFdTable();
  const file = makeMemfd('probe-close');
  const withFile = openFdTable();
  try {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 5 }), fc.option(fc.nat(), { nil: undefined }), async (n, behind) => {
        const conn = await connect('direct', { command: PROBE_COMMAND });
        const copies = await conn.dupFileDescriptors(Array.from({ length: n }, () => file));
        await conn.call('adopt', copies);
        const gone = behind === undefined ? undefined : copies[behind % n];
        // Closed by other code of this process: the command's close() must not fail on it, nor skip the others.
        if (gone !== undefined) closeFd(gone);
        await conn.close();
        expect(await fdTableSettles(process.pid, withFile)).toBe('');
      }),
      { numRuns: 15 },
    );
  } finally {
    closeFd(file);
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test("openFds() is the process's open-fd table; fdsSeenByExec() what an exec'd ls lists; fdLimit() the limits", async () => {
  await withProbe(async (conn) => {
    const file = makeMemfd('probe-table');
    try {
      const [copy] = await conn.dupFileDescriptors([file]);
      expect(new Map(await conn.call<Array<[number, string]>>('openFds'))).toEqual(openFdTable());
      const own = spawnSync('/bin/ls', ['/proc/self/fd'], { encoding: 'utf8' }).stdout.trim().split('\n').map(Number);
      const seen = await conn.call<number[]>('fdsSeenByExec');
      expect(seen).toEqual(own);
      // The copy is close-on-exec: an exec'd program does not see it.
      expect(seen.includes(copy as number)).toBe(false);
      expect(await conn.call('fdLimit')).toEqual(fdLimit());
      await conn.call('adopt', [copy]);
      await conn.call('closeAdopted', [copy]);
    } finally {
      closeFd(file);
    }
  });
});

test("fdsSeenByExec() that cannot run ls (its process at its fd limit) throws saying so", async () => {
  const before = openFdTable();
  const conn = await connect('child', { command: PROBE_COMMAND });
  try {
    const used = new Set((await conn.call<Array<[number, string]>>('openFds')).map(([n]) => n));
    let lowestFree = 0;
    while (used.has(lowestFree)) lowestFree++;
    const [soft] = await conn.call<[number, number]>('fdLimit');
    await conn.call('setFdLimit', lowestFree);
    const err = await conn.call('fdsSeenByExec').catch((e: unknown) => e);
    await conn.call('setFdLimit', soft);
    expect(err).toBeInstanceOf(RemoteError);
    expect((err as RemoteError).remote).toMatchObject({ name: 'Error', message: expect.stringMatching(/^ls \/proc\/self\/fd failed: /) });
    // With room again, it runs.
    expect((await conn.call<number[]>('fdsSeenByExec')).slice(0, 3)).toEqual([0, 1, 2]);
  } finally {
    await conn.close();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('generated: setFdLimit() sets the soft limit', async () => {
  const [soft, hard] = fdLimit();
  try {
    await withProbe(async (conn) => {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: openFdTable().size + 64, max: Math.min(hard, soft + 4096) }), async (limit) => {
          await conn.call('setFdLimit', limit);
          expect(fdLimit()).toEqual([limit, hard]);
        }),
        { numRuns: 10 },
      );
    });
  } finally {
    setFdLimit(soft, hard);
  }
});

test('generated: block() and later() answer their arguments; fail() throws its message and code', async () => {
  await withProbe(async (conn) => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 5 }), fc.jsonValue(), fc.string(), fc.option(fc.string({ minLength: 1 }), { nil: undefined }), async (ms, value, message, code) => {
        expect(await conn.call('block', ms)).toBe(ms);
        expect(await conn.call('later', ms, value)).toEqual(JSON.parse(JSON.stringify(value)));
        const err = await conn.call('fail', message, ...(code === undefined ? [] : [code])).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(RemoteError);
        expect({ ...(err as RemoteError).remote, stack: undefined }).toEqual({ name: 'Error', message, ...(code === undefined ? {} : { code }), stack: undefined });
      }),
      { numRuns: 20 },
    );
  });
});

test('hang() never answers: its call is ended by close() with a ClosedError', async () => {
  const before = openFdTable();
  const conn = await connect('direct', { command: PROBE_COMMAND });
  const hung = conn.call('hang').then(
    () => 'answered',
    (e: unknown) => e,
  );
  // Calls after it are answered meanwhile.
  expect(await conn.call('echo', 7)).toBe(7);
  await conn.close();
  expect(await hung).toBeInstanceOf(ClosedError);
  expect(await fdTableSettles(process.pid, before)).toBe('');
});

test('generated: exit() ends the command process with its code', async () => {
  const before = openFdTable();
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 255 }), async (code) => {
      const conn = await connect('child', { command: PROBE_COMMAND });
      const err = await conn.call('exit', code).catch((e: unknown) => e);
      await conn.close();
      expect(err).toBeInstanceOf(PeerExitedError);
      expect(err).toMatchObject({ transport: 'child', exitCode: code, signal: null });
    }),
    { numRuns: 3 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 60_000);
