/**
 * Peers written with the raw socket API, the way users write receive code
 * by hand: Python programs (its socket module is a thin layer over
 * recvmsg(2), flags and control-buffer size included). fdbridge's side of
 * the exchange is a UnixSocket; the peer gets the other end as fd 3, reads
 * one message and prints one JSON line about it. A reproduced bug lives in
 * the peer's code; what the scenario checks follows from what fdbridge sent.
 */
import { spawn } from 'node:child_process';

import { UnixSocket, type SocketKind } from '../../src';
import { rawSocketPair } from '../../src/testing';
import type { ScenarioContext } from '../../harness/types';
import { closeAll } from './common';

/** Python that reads fd 3 as `sock` (blocking), for a peer program to continue. */
const PRELUDE = `
import array, json, os, socket, sys
sock = socket.socket(fileno=3)
sock.setblocking(True)
def scm_rights(ancdata):
    fds = array.array('i')
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return list(fds)
`;

export interface RawPeerRun {
  /** The peer's last stdout line, parsed. */
  report: unknown;
  /** Everything it printed (a peer that execs prints its new program's output). */
  stdout: string;
}

/**
 * Starts `program` (Python, after PRELUDE) with one end of a fresh `kind`
 * socketpair as fd 3, sends `data` and `fds` to it through fdbridge's
 * UnixSocket, and resolves with what it printed once it exits 0. Skips the
 * row when python3 is not installed.
 */
export async function exchangeWithRawPeer(
  ctx: ScenarioContext,
  program: string,
  kind: SocketKind,
  data: Buffer,
  fds: readonly number[],
): Promise<RawPeerRun> {
  const [ours, theirs] = rawSocketPair(kind);
  let sock: UnixSocket | undefined;
  try {
    sock = new UnixSocket(ours, kind);
  } catch (err) {
    closeAll([ours, theirs]);
    throw err;
  }
  try {
    const peer = spawn('python3', ['-c', PRELUDE + program], { stdio: ['ignore', 'pipe', 'pipe', theirs] });
    // The peer has its copy now (or failed to start): ours would keep the socket open past its death.
    closeAll([theirs]);
    let stdout = '';
    let stderr = '';
    peer.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    peer.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
      peer.once('error', (error) => resolve({ code: null, signal: null, error }));
      peer.once('close', (code, signal) => resolve({ code, signal }));
    });
    const sent = await sock.send(data, fds).then(
      () => undefined,
      (err: unknown) => err,
    );
    const end = await exited;
    if ((end.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') ctx.skip('python3 is not installed (the raw-API peer is written in Python)');
    if (end.error) throw end.error;
    if (sent !== undefined) throw sent;
    if (end.code !== 0) throw new Error(`the raw peer ended with ${end.signal ?? `exit code ${end.code}`}: ${stderr.trim()}`);
    const last = stdout.trim().split('\n').pop() ?? '';
    let report: unknown = last;
    try {
      report = JSON.parse(last);
    } catch {
      // a peer that exec'd a program: its output is the report
    }
    return { report, stdout };
  } finally {
    sock.close();
  }
}
