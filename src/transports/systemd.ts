/**
 * The two systemd protocols a service speaks, without libsystemd:
 * socket activation (sd_listen_fds(3): the listening sockets arrive as fds
 * 3.. with LISTEN_FDS=n and LISTEN_PID=<our pid>) and readiness
 * (sd_notify(3): a datagram "READY=1" to the AF_UNIX socket named by
 * NOTIFY_SOCKET, a path or, with a leading '@', an abstract name).
 */
import { DatagramSocket } from '../datagram';
import { native } from '../native';

/** The first fd systemd passes (SD_LISTEN_FDS_START). */
export const SD_LISTEN_FDS_START = 3;

/**
 * The listening fds systemd passed to this process, or [] when none were
 * (or they were meant for another process: LISTEN_PID differs, as after a
 * fork). Like sd_listen_fds(1), it removes LISTEN_PID, LISTEN_FDS and
 * LISTEN_FDNAMES from `env`, so that child processes do not think the fds
 * are theirs; the fds are made close-on-exec.
 */
export function listenFdsFromSystemd(env: NodeJS.ProcessEnv = process.env): number[] {
  const pid = env['LISTEN_PID'];
  const count = env['LISTEN_FDS'];
  delete env['LISTEN_PID'];
  delete env['LISTEN_FDS'];
  delete env['LISTEN_FDNAMES'];
  if (pid === undefined || count === undefined || Number(pid) !== process.pid) return [];
  const n = Number(count);
  if (!Number.isInteger(n) || n < 1) return [];
  const fds = Array.from({ length: n }, (_, i) => SD_LISTEN_FDS_START + i);
  for (const fd of fds) native.setCloexec(fd, true);
  return fds;
}

/**
 * Sends `state` (e.g. "READY=1") to NOTIFY_SOCKET. Resolves false when
 * there is no NOTIFY_SOCKET (not started by systemd with Type=notify),
 * true once the datagram is sent; rejects if it cannot be.
 */
export async function notifySystemd(state: string, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  const target = env['NOTIFY_SOCKET'];
  if (target === undefined || target === '') return false;
  const socket = DatagramSocket.open({ whenFull: 'fail', own: true });
  try {
    await socket.sendTo(target.startsWith('@') ? { abstract: target.slice(1) } : target, Buffer.from(state));
  } finally {
    socket.close();
  }
  return true;
}
