/**
 * `fdbridge serve --stdio`: the command's side of a remote connection,
 * started by the client through `via` (ssh, docker exec -i, kubectl exec
 * -i, or any process whose stdin and stdout reach this one). It hosts one
 * command, in this thread; the channel and the relayed streams run in a
 * thread of their own (entries/remote-relay-main.ts). It ends when its
 * stdin ends: the client closed, or the channel was lost (the via process
 * died), and then the command's close() runs and every fd it was given and
 * did not adopt is closed before the process exits.
 *
 * Commands are named, as on a helper daemon: the built-in log and probe,
 * and those given with --command NAME=MODULE[#EXPORT] (the client passes
 * its own command's module so when it names one; the server is the
 * client's own process on the far machine, started with the client's
 * credentials there).
 */
import { openSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

import { dropSpawnToken } from '../child-process';
import { CommandHost, SetLedger, type CommandSpec } from '../command';
import { BUILTIN_COMMANDS, DIAGNOSTIC_COMMANDS } from '../commands/registry';
import { describeError, UnknownCommandError, type RemoteErrorInfo } from '../errors';
import { closeOwnFds, handedOver } from '../fd';
import { valueToJson } from '../json-value';
import { native } from '../native';
import { requireDistFile } from '../paths';
import { fdsOpenedBy, warmRuntimeFds, type ConstructorFd } from '../runtime-fds';

/** Relay thread -> command host. */
export type RelayToHost =
  | { type: 'hello'; id: number; command: CommandSpec }
  /** The command's end of a new stream: into its ledger (before the client learns its number). */
  | { type: 'give'; fd: number }
  | { type: 'call'; id: number; method: string; args: unknown[] }
  | { type: 'release'; id: number; fds: number[] }
  | { type: 'close'; id: number }
  /** The channel ended (the client closed, or the via process died). */
  | { type: 'end'; reason: string | null };

/** Command host -> relay thread. */
export type HostToRelay =
  /** `constructorFds`: what the command's construction opened and left open (fdsOpenedBy). */
  | { type: 'ready'; id: number; pid: number; threadId: number; constructorFds: ConstructorFd[] }
  | { type: 'failed'; id: number; error: RemoteErrorInfo }
  /** `json`: the result as JSON text, undefined for undefined. */
  | { type: 'result'; id: number; json: string | undefined }
  | { type: 'error'; id: number; error: RemoteErrorInfo }
  | { type: 'closed'; id: number };

export interface ServeStdioOptions {
  /** Commands served besides the built-in ones (log, probe), by name. */
  commands?: Readonly<Record<string, CommandSpec>>;
  /** Diagnostic lines (stderr in the CLI). */
  log?: (line: string) => void;
}

/** The code for a command the client named. */
function resolver(commands: Readonly<Record<string, CommandSpec>>): (requested: CommandSpec) => CommandSpec {
  const table = new Map<string, CommandSpec>([...Object.entries(BUILTIN_COMMANDS), ...Object.entries(DIAGNOSTIC_COMMANDS), ...Object.entries(commands)]);
  return (requested) => {
    const spec = typeof requested.name === 'string' ? table.get(requested.name) : undefined;
    if (spec === undefined) {
      throw new UnknownCommandError(`this server does not serve a command named ${JSON.stringify(requested.name)}; it serves: ${[...table.keys()].join(', ')}`);
    }
    return requested.args !== undefined ? { ...spec, args: requested.args } : spec;
  };
}

/**
 * Takes this process's stdin and stdout for the channel and serves until
 * the channel ends; resolves then (with the command closed and the relay
 * thread gone). Anything else in the process that writes to stdout (a
 * command's console.log) goes to stderr instead: fd 1 is made a copy of
 * fd 2, and fd 0 reads /dev/null.
 */
export async function serveStdio(options: ServeStdioOptions = {}): Promise<void> {
  const resolve = resolver(options.commands ?? {});
  // Started as a remote connection's via (or by one), the commands' programs are not that spawn.
  dropSpawnToken();
  const inFd = native.dupHigh(0);
  const outFd = native.dupHigh(1);
  // Lowest free number: 0, then 1, as each is closed in turn.
  native.close(0);
  const devnull = openSync('/dev/null', 'r');
  native.close(1);
  const stdout = handedOver(native.dup(2)); // the process's stdout from here on
  if (devnull !== 0 || stdout !== 1) options.log?.(`serve --stdio: fd 0 and 1 are now ${devnull} and ${stdout}, not 0 and 1`);
  // What the runtime opens lazily and keeps (process.stdout, now fd 2's
  // copy, included), before the client's leak check takes its baseline.
  warmRuntimeFds();

  const ledger = new SetLedger();
  let host: CommandHost | undefined;
  /** The client sent CLOSE: nothing more is given to the command. */
  let closed = false;
  const relay = new Worker(requireDistFile('src/transports/entries/remote-relay-main.js'), { workerData: { inFd, outFd } });
  const post = (m: HostToRelay): void => relay.postMessage(m);
  let ended!: () => void;
  const done = new Promise<void>((r) => (ended = r));
  let ending = false;
  const end = (reason: string | null): void => {
    if (ending) return;
    ending = true;
    if (reason !== null) options.log?.(`serve --stdio: the channel ended: ${reason}`);
    const closing = host ? host.close() : Promise.resolve();
    closing
      .catch((err: unknown) => options.log?.(`serve --stdio: the command's close() failed: ${describeError(err, { stack: false }).message}`))
      .finally(() => {
        ledger.sweep();
        void relay.terminate().finally(ended);
      });
  };

  relay.on('error', (err) => {
    options.log?.(`serve --stdio: the relay thread failed: ${err.stack ?? err.message}`);
    end(err.message);
  });
  relay.on('exit', () => end(null));
  relay.on('message', (m: RelayToHost) => {
    switch (m.type) {
      case 'hello':
        try {
          // This process serves the one command: the client's leak check, whose
          // baseline of it is read once the connection is up, charges what
          // the construction left open to the constructor.
          const made = fdsOpenedBy(() => new CommandHost(resolve(m.command), 'remote', ledger));
          host = made.value;
          post({ type: 'ready', id: m.id, pid: process.pid, threadId: host.context.threadId, constructorFds: made.opened });
        } catch (err) {
          post({ type: 'failed', id: m.id, error: describeError(err) });
        }
        return;
      case 'give':
        // After CLOSE (a copy that completed behind it) nobody would own it.
        if (host && !closed) ledger.add(m.fd);
        else closeOwnFds([m.fd]);
        return;
      case 'call': {
        const h = host;
        if (!h) return;
        h.call(m.method, m.args).then(
          (value) => {
            let json: string | undefined;
            try {
              // Bare JSON on this channel; measured as every transport's { value }.
              json = valueToJson(value);
            } catch (err) {
              post({ type: 'error', id: m.id, error: describeError(err) });
              return;
            }
            post({ type: 'result', id: m.id, json });
          },
          (err: unknown) => post({ type: 'error', id: m.id, error: describeError(err) }),
        );
        return;
      }
      case 'release': {
        // Each only while its number holds the fd given: one the command closed itself is left alone.
        const { close, refusal } = ledger.release(m.fds);
        closeOwnFds(close);
        post(refusal ? { type: 'error', id: m.id, error: describeError(refusal) } : { type: 'result', id: m.id, json: undefined });
        return;
      }
      case 'close': {
        closed = true;
        const closing = host ? host.close() : Promise.resolve();
        closing.catch(() => undefined).finally(() => post({ type: 'closed', id: m.id }));
        return;
      }
      case 'end':
        end(m.reason);
        return;
    }
  });
  await done;
}
