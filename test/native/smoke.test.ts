import { UnixSocket } from '../../src/socket';
import { sameFile } from '../../src/fd';
import { closeSync, openSync } from 'node:fs';

test('a pipe fd crosses a seqpacket pair', async () => {
  const [a, b] = UnixSocket.pair('seqpacket');
  const fd = openSync('/dev/null', 'r');
  try {
    await a.send(Buffer.from('x'), [fd]);
    const m = await b.receive();
    expect(m.data.toString()).toBe('x');
    expect(m.fds).toHaveLength(1);
    expect(sameFile(fd, m.fds[0]!)).toBe(true);
    closeSync(m.fds[0]!);
  } finally {
    closeSync(fd);
    a.close();
    b.close();
  }
});
