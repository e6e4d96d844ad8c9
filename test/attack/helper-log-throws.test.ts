/**
 * A helper daemon's log callback that throws, on whatever line (a client
 * served, a call that failed, a connection ended), breaks nothing: every
 * client is answered, the daemon's counts come back to zero, its sockets
 * are closed by close(), and what the callback threw is not lost: the
 * first throw is reported as a process warning (ERR_FDBRIDGE_LOG_THREW,
 * its `cause` the thrown value), once per daemon. (Thrown out of the
 * daemon, the throw at "serving pid P" left that client unanswered until
 * its connect timed out, its accepted socket open after close(), and
 * stats.active one too high.)
 */
import fc from 'fast-check';

import { connect, HelperDaemon, PROBE_COMMAND, RemoteError } from '../../src';
import { openFdTable } from '../../src/fd';
import { LOG_THREW_WARNING } from '../../src/transports/helper-daemon';
import { fdTableSettles } from '../util/processes';

let seq = 0;

test('generated: a log callback throwing on any of its lines leaves every client served, the counts right and nothing open, and is reported once as a warning', async () => {
  const before = openFdTable(process.pid);
  // What the daemon hands to process.emitWarning (jest's sandbox has a process object of its own, whose
  // 'warning' listeners the real process does not call).
  const emitWarning = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
  const warnings = (): Array<{ message: string; options: { type?: string; code?: string; detail?: string } }> =>
    emitWarning.mock.calls
      .map(([message, options]) => ({ message: String(message), options: (options ?? {}) as { type?: string; code?: string; detail?: string } }))
      .filter((w) => w.options.code === 'ERR_FDBRIDGE_LOG_THREW');
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 4 }), fc.boolean(), async (pattern, clients, concurrent) => {
        emitWarning.mockClear();
        // Once the daemon serves, its line n throws when pattern[n % length] says so. (A throw during
        // start() fails the start, which gives back what it took: test/transports/helper-start-failure.)
        const thrown: unknown[] = [];
        let n = 0;
        let serving = false;
        const log = (line: string): void => {
          if (serving && pattern[n++ % pattern.length]) {
            const err = new Error(`log refused: ${line}`);
            thrown.push(err);
            throw err;
          }
        };
        const daemon = HelperDaemon.start({ socketPath: `@fdbridge-log-throws-${process.pid}-${seq++}`, diagnostics: true, log });
        serving = true;
        try {
          const one = async (i: number): Promise<void> => {
            // A connect that is not answered fails with the connection's own typed timeout.
            const conn = await connect('helper', { command: PROBE_COMMAND, socketPath: daemon.socketPath, timeoutMs: 20_000 });
            try {
              expect(await conn.call('echo', i)).toBe(i);
              // A call that throws is logged with its stack (`pid P: call fail() failed`) and answered all the same.
              await expect(conn.call('fail', 'no', 'ENOPE')).rejects.toBeInstanceOf(RemoteError);
              expect(await conn.call('echo', -i)).toBe(-i);
            } finally {
              await conn.close();
            }
          };
          if (concurrent) await Promise.all(Array.from({ length: clients }, (_, i) => one(i + 1)));
          else for (let i = 1; i <= clients; i++) await one(i);
          await daemon.idle(20_000);
          expect(daemon.stats.active).toBe(0);
          expect(daemon.stats.connections).toBe(clients);
          expect(daemon.status().clients).toEqual([]);
        } finally {
          await daemon.close();
        }
        if (thrown.length === 0) {
          expect(warnings()).toEqual([]);
        } else {
          expect(warnings()).toHaveLength(1);
          const [w] = warnings();
          expect(w?.options.type).toBe(LOG_THREW_WARNING);
          expect(w?.message).toContain(String(thrown[0]));
          expect(w?.options.detail).toBe((thrown[0] as Error).stack);
        }
      }),
      { numRuns: 25, examples: [[[true], 1, false], [[false, true], 2, true], [[false], 1, false], [[true, false, false], 3, true]] },
    );
  } finally {
    emitWarning.mockRestore();
  }
  expect(await fdTableSettles(process.pid, before)).toBe('');
}, 300_000);
