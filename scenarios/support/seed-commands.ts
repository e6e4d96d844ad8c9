/**
 * Commands written the way the seed's helper was, bugs included: user code
 * that fdbridge hosts and the leak oracle watches. The reproduce-seed-*
 * scenarios run them; what they show depends on what fdbridge duplicates
 * into them and on what the oracle then sees.
 */
import { unlinkSync } from 'node:fs';

import { closeFd, fdIdentity, type CommandContext, type CommandSpec } from '../../src';
import { distPath } from '../../src/paths';
import { rawListen, receiveNow } from '../../src/testing';

/**
 * The seed's receive path as a command: of the fds that arrived together it
 * uses the first and closes it; the others were installed in its process by
 * the same message, and nobody closes them.
 */
export class FirstFdOnlyCommand {
  constructor(readonly context: CommandContext) {}

  /** Adopts every fd of the message, returns the first's inode and closes it; the rest stay open. */
  useFirst(fds: number[]): string {
    for (const fd of fds) this.context.adoptFd(fd);
    const [first] = fds;
    if (first === undefined) throw new Error('message did not include file descriptor');
    const ino = String(fdIdentity(first).ino);
    closeFd(first);
    return ino;
  }
}

/**
 * The command's steps of the seed's four-step exchange: (1) bind a datagram
 * socket to a file, (4) receive the fd sent there, close the socket and
 * delete the file. Between the two the file exists only because this
 * process will delete it.
 */
export class SeedExchangeCommand {
  #sock = -1;
  #path = '';

  constructor(readonly context: CommandContext) {}

  /** (1) makeTemporaryDatagramSocket. */
  bind(path: string): void {
    this.#sock = rawListen('dgram', path, { backlog: 0 });
    this.#path = path;
  }

  /** (4) receiveFileDescriptorViaSocket: how many fds arrived (closed at once). */
  receiveAndUnlink(): number {
    const m = receiveNow(this.#sock, 1, 1);
    closeFd(this.#sock);
    this.#sock = -1;
    unlinkSync(this.#path);
    for (const fd of m?.fds ?? []) closeFd(fd);
    return m?.fds.length ?? 0;
  }

  close(): void {
    if (this.#sock >= 0) closeFd(this.#sock);
  }
}

const MODULE = distPath('scenarios/support/seed-commands.js');
export const FIRST_FD_ONLY_COMMAND: CommandSpec = { module: MODULE, export: 'FirstFdOnlyCommand' };
export const SEED_EXCHANGE_COMMAND: CommandSpec = { module: MODULE, export: 'SeedExchangeCommand' };
