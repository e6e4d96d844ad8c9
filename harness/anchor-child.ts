/**
 * The far side of the Node anchors (forked by harness/anchors.ts): answers
 * every IPC message at once. A message that came with a handle (a net.Server)
 * is answered after the server is closed, so that one round trip is one
 * handle in, one fd closed, one reply out: what a dupFileDescriptor round
 * trip plus its far-side close costs, done Node's way.
 */
import type { Server } from 'node:net';

if (!process.send) throw new Error('anchor-child must be started with fork()');

process.on('message', (message: unknown, handle?: unknown) => {
  const server = handle as Server | undefined;
  if (server && typeof server.close === 'function') {
    // close() closes the listening fd synchronously; its callback only
    // waits for connections, of which there are none.
    server.close();
  }
  process.send?.(message);
});
// A disconnected channel (the parent is done or gone) ends this process.
process.on('disconnect', () => process.exit(0));
process.send('ready');
