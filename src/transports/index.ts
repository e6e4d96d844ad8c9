/**
 * Where a transport is chosen: the registry from a transport's name to how
 * a connection through it is opened. `connect(name, options)` looks the name
 * up here; `transportNames()` lists them in this order.
 */
import type { Connection, ConnectOptions } from '../connection';
import { ChildConnection } from './child';
import { DirectConnection } from './direct';
import { RemoteConnection } from './remote';
import { openHelper } from './helper';
import { PidfdConnection } from './pidfd';
import { WorkerConnection } from './worker';
import { validateInteger, validateTimeoutMs } from '../validate';

/** Where a command runs: the transports, by the name `connect` takes (also in errors and CommandContext). */
export type TransportName = 'direct' | 'worker' | 'child' | 'helper' | 'pidfd' | 'remote';

type Opener = (options: ConnectOptions) => Promise<Connection>;

const registry = new Map<TransportName, Opener>([
  ['direct', (o) => DirectConnection.open(o)],
  ['worker', (o) => WorkerConnection.open(o)],
  ['child', (o) => ChildConnection.open(o)],
  ['helper', (o) => openHelper(o)],
  ['pidfd', (o) => PidfdConnection.open(o)],
  ['remote', (o) => RemoteConnection.open(o)],
]);

/** The names `connect` accepts. */
export function transportNames(): TransportName[] {
  return [...registry.keys()];
}

/**
 * Starts (or reaches) the command named in `options.command` and returns a
 * connection to it.
 */
export function connect(transport: TransportName, options: ConnectOptions): Promise<Connection> {
  const open = registry.get(transport);
  if (!open) {
    return Promise.reject(new TypeError(`unknown transport ${String(transport)}; use one of ${transportNames().join(', ')}`));
  }
  if (typeof options !== 'object' || options === null) {
    return Promise.reject(new TypeError('connect(transport, options): options.command is required'));
  }
  const { timeoutMs } = options;
  if (timeoutMs !== undefined) {
    try {
      validateTimeoutMs(timeoutMs, 'connect: options.timeoutMs', 1);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }
  const { sendQueueLimit } = options;
  if (sendQueueLimit !== undefined) {
    try {
      validateInteger(sendQueueLimit, 'connect: options.sendQueueLimit', 0, Number.MAX_SAFE_INTEGER);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }
  return open(options);
}
