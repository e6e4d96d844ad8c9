/**
 * A worker command that posts a message of its own on the thread's parent
 * port before its thread is ready: whatever it is (a shape of fdbridge's own
 * messages, or anything else), connect rejects with ProtocolError naming
 * it, starts no other thread (one start, not a restart), and leaves no
 * thread or fd behind.
 */
import { join } from 'node:path';

import fc from 'fast-check';

import { connect, ProtocolError } from '../../src';
import { openFdTable } from '../../src/fd';
import { fdTableSettles } from '../util/processes';

const COMMAND = join(__dirname, '..', 'fixtures', 'stray-message-command.js');

test('generated: a message posted by the command before ready rejects connect with ProtocolError', async () => {
  const before = openFdTable();
  const type = fc.oneof(
    fc.constantFrom('result', 'error', 'closed', 'call', 'close', 'hello'),
    fc.string({ minLength: 1, maxLength: 12 }).filter((t) => !['ready', 'failed', 'restart'].includes(t)),
  );
  await fc.assert(
    fc.asyncProperty(type, async (t) => {
      const err = await connect('worker', { command: { module: COMMAND, export: 'StrayMessageCommand', args: [{ type: t, id: 1 }] } }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as Error).message).toContain(`answered with a ${t} message before it was ready`);
    }),
    { numRuns: 8, seed: 20261204 },
  );
  expect(await fdTableSettles(process.pid, before)).toBe('');
});
