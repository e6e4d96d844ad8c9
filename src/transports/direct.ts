/**
 * direct: the command is an object in the caller's thread. Duplication is
 * dup(2) (close-on-exec); the duplicate is owned by the connection until the
 * command adopts it.
 */
import { threadId } from 'node:worker_threads';

import { BaseConnection, type CommandLocation, type ConnectOptions } from '../connection';
import { CommandHost, normalizeCommandSpec } from '../command';
import { describeError, RemoteError } from '../errors';
import { argsFromJson, resultFromJson, resultToJson } from '../json-value';
import type { FdList } from '../native';
import { GivenCopySet } from './given-copies';

/**
 * Runs a method on a host with the call's JSON, as a socket transport
 * would, and returns a copy of its result made through JSON: what the
 * command throws, or returns that JSON cannot carry (or that is past
 * MAX_CALL_JSON_BYTES), is a RemoteError.
 */
export async function callOnHost(host: CommandHost, method: string, callJson: string): Promise<unknown> {
  try {
    return resultFromJson(resultToJson(await host.call(method, argsFromJson(callJson))));
  } catch (err) {
    throw Object.assign(new RemoteError(method, describeError(err)), { cause: err });
  }
}

export class DirectConnection extends BaseConnection {
  readonly transport = 'direct' as const;
  readonly location: CommandLocation = { transport: 'direct', pid: process.pid, threadId };
  #host: CommandHost;

  static async open(options: ConnectOptions): Promise<DirectConnection> {
    const spec = normalizeCommandSpec(options.command);
    const ledger = new GivenCopySet();
    let host: CommandHost;
    try {
      host = new CommandHost(spec, 'direct', ledger);
    } catch (err) {
      // As on every transport: the command's module or constructor failed.
      throw Object.assign(new RemoteError('constructor', describeError(err)), { cause: err });
    }
    return new DirectConnection(host, ledger, options);
  }

  /** host's ledger: the copies given to the command and not adopted. */
  #ledger: GivenCopySet;

  private constructor(host: CommandHost, ledger: GivenCopySet, options: ConnectOptions) {
    super(options.onCommandClosed);
    this.#host = host;
    this.#ledger = ledger;
  }

  /** dupOneSync: nothing here waits; a throw becomes the rejection. */
  protected async dupOne(fd: number): Promise<number> {
    return this.dupOneSync(fd);
  }

  /** In this process: nothing to wait for. */
  protected dupOneSync(fd: number): number {
    // Above the floor: never a number the caller closed and may still name.
    return this.#ledger.give(fd);
  }

  protected async dupMany(fds: FdList, above: number): Promise<number[]> {
    return this.#ledger.giveAll(fds, above);
  }

  /** Through the ledger: a number the program closed behind fdbridge's back and opened a file of its own at keeps that file. */
  protected release(fds: number[]): Promise<void> {
    return this.#ledger.release(fds);
  }

  protected callRemote(method: string, json: string): Promise<unknown> {
    return callOnHost(this.#host, method, json);
  }

  protected async closeTransport(): Promise<void> {
    await this.#host.close();
    await this.commandClosed();
  }
}
