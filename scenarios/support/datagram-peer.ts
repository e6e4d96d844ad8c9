/**
 * A datagram peer in its own process, for the request/reply scenarios: it
 * binds a DatagramSocket at a path, says "bound", and on each request
 * either answers the sender ("pong") or, told to ("die" as the request),
 * SIGKILLs itself before answering, as a helper that crashes mid-request.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';
import { sleep } from './common';

const PEER = `
const { DatagramSocket } = require(process.argv[1]);
const sock = DatagramSocket.bind(process.argv[2]);
sock.setMessageHandler(async (err, d) => {
  if (!d) return;
  if (d.data.toString() === 'die') process.kill(process.pid, 'SIGKILL');
  await sock.sendTo(d.from, Buffer.from('pong'));
});
process.stdout.write('bound\\n');
`;

export interface DatagramPeer {
  child: ChildProcess;
  /** Resolves when the process has exited (with its signal, if any). */
  exited: Promise<NodeJS.Signals | null>;
}

/** Starts the peer bound at `path`; resolves once it is bound. */
export async function startDatagramPeer(path: string): Promise<DatagramPeer> {
  const child = spawn(process.execPath, ['-e', PEER, join(packageRoot, 'dist', 'src', 'index.js'), path], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  let said = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (said += d));
  for (let i = 0; i < 2000 && !said.includes('bound') && child.exitCode === null && child.signalCode === null; i++) await sleep(10);
  if (!said.includes('bound')) {
    child.kill('SIGKILL');
    throw new Error(`the datagram peer did not bind ${path}`);
  }
  return { child, exited };
}
