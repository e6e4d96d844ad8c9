/**
 * `fdbridge helper [--socket PATH] [--allow-uid UID[,UID...]] [--command NAME=MODULE[#EXPORT]]... [--diagnostics] [--verbose]`:
 * run a helper daemon.
 */
import { isAbsolute, resolve } from 'node:path';

import type { CommandSpec } from '../../src/command';
import { warmRuntimeFds } from '../../src/runtime-fds';
import { describeDefaultHelperSocketPath, HelperDaemon } from '../../src/transports/helper-daemon';
import { EXIT, parseCommandArgs, parseInteger, UsageError } from './usage';

/** `--command NAME=MODULE[#EXPORT]` arguments as the daemon's command table (relative modules resolved against the cwd). */
function parseCommands(args: readonly string[]): Record<string, CommandSpec> {
  const commands: Record<string, CommandSpec> = {};
  for (const arg of args) {
    const m = /^([^=]+)=([^#]+)(?:#(.+))?$/.exec(arg);
    if (!m) throw new UsageError(`--command ${arg}: expected NAME=MODULE[#EXPORT]`);
    const [, name, module, exportName] = m as unknown as [string, string, string, string | undefined];
    if (Object.hasOwn(commands, name)) throw new UsageError(`--command: ${name} is given twice`);
    // A relative path is the operator's, resolved against their cwd now.
    const absolute = module.startsWith('.') || isAbsolute(module) ? resolve(module) : module;
    commands[name] = { module: absolute, ...(exportName !== undefined ? { export: exportName } : {}) };
  }
  return commands;
}

export const USAGE = `helper [--socket PATH | --socket @NAME] [--allow-uid UID[,UID...]] [--command NAME=MODULE[#EXPORT]]... [--diagnostics] [--verbose]
      Run a helper daemon: clients of the 'helper' transport connect to its socket, and each
      gets its own command instance, run in this process. Runs until SIGINT or SIGTERM, then
      closes every connection, removes its socket and exits 0.

  --socket PATH      where to listen (default: ${describeDefaultHelperSocketPath()});
                     @NAME for a name in the abstract namespace
  --allow-uid UIDS   serve these uids too (comma-separated); by default only this process's own
  --command NAME=MODULE[#EXPORT]
                     serve the command class EXPORT (default: default) of MODULE under NAME;
                     repeatable. Clients name a command; they never choose code. Built in: log
  --diagnostics      also serve the diagnostic command probe (it reads any fd of this process:
                     for test daemons only)
  --verbose          log connections, and what each ended connection turned away, to stderr

Prints "fdbridge helper listening on PATH (pid N)" on stdout once it accepts connections.
exit status: 0 stopped by a signal; 2 usage error; 3 cannot listen (the message says why).`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs(argv, {
    socket: { type: 'string' },
    'allow-uid': { type: 'string' },
    command: { type: 'string', multiple: true },
    diagnostics: { type: 'boolean' },
    verbose: { type: 'boolean' },
  });
  const allowUids = (values['allow-uid'] ?? '')
    .split(',')
    .filter((s) => s !== '')
    .map((s) => parseInteger('--allow-uid', s, 0));
  // Left out when not given: the default path gets its private directory made.
  const socketPath = values.socket ?? describeDefaultHelperSocketPath();
  const commands = parseCommands(values.command ?? []);
  let daemon: HelperDaemon;
  try {
    daemon = HelperDaemon.start({
      ...(values.socket !== undefined ? { socketPath: values.socket } : {}),
      allowUids,
      commands,
      diagnostics: values.diagnostics ?? false,
      log: values.verbose ? (line) => process.stderr.write(`fdbridge helper: ${line}\n`) : undefined,
    });
  } catch (err) {
    throw new Error(`cannot listen on ${socketPath}: ${(err as Error).message}`, { cause: err });
  }
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.stderr.write(`fdbridge helper: ${signal}: closing\n`);
      daemon.close().finally(resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  // The fds libuv opens lazily and keeps, opened before anyone takes a
  // baseline of this process (a command that spawns would open them later).
  warmRuntimeFds();
  // Announce only once the signal handlers are in place.
  process.stdout.write(`fdbridge helper listening on ${daemon.socketPath} (pid ${process.pid})\n`);
  await stopped;
  return EXIT.ok;
}
