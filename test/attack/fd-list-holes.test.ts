/**
 * A hole in an fd list (`[0, , 2]`, or an array whose length was set) must
 * be refused like the value it reads as (`undefined`): at once, with a
 * TypeError naming the index, before anything is sent. Array.prototype.forEach
 * skips holes, so a sparse list passes the up-front check and reaches the
 * transport; a sparse list of huge length (length = 2^31, no elements) is
 * then walked element by element and cut into 253-fd batches: the caller ran
 * 5 minutes at 3.6 GB RSS without an answer instead of a typed error.
 */
import { connect, PROBE_COMMAND } from '../../src';
import { openFdTable } from '../../src/fd';

test('a hole in an fd list is refused at once like undefined, naming its index (direct)', async () => {
  const before = openFdTable();
  const conn = await connect('direct', { command: PROBE_COMMAND });
  try {
    const dense = [0, undefined as unknown as number, 2];
    // eslint-disable-next-line no-sparse-arrays
    const sparse = [0, , 2] as number[];
    expect(() => conn.dupFileDescriptors(dense)).toThrow(/fds\[1\]/);
    let syncError: unknown;
    let pending: Promise<unknown> | undefined;
    try {
      pending = conn.dupFileDescriptors(sparse);
    } catch (e) {
      syncError = e;
    }
    if (pending) await pending.catch(() => undefined);
    expect(syncError).toBeInstanceOf(TypeError);
    expect(String((syncError as Error | undefined)?.message)).toMatch(/fds\[1\]/);
    // A list with a length and no elements: refused at its first index, not walked.
    const huge: number[] = [];
    huge.length = 2 ** 31 - 1;
    expect(() => conn.dupFileDescriptors(huge)).toThrow(/fds\[0\]/);
  } finally {
    await conn.close();
  }
  expect(openFdTable()).toEqual(before);
});
