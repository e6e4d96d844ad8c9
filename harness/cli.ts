#!/usr/bin/env node
/**
 * The fdbridge command line:
 *   fdbridge helper [--socket PATH] [--allow-uid UID[,UID...]]   run a helper daemon
 *   fdbridge log [--transport T] [--socket PATH] [--logfile SPEC] LINE...
 */
import { parseArgs } from 'node:util';

import { connect, transportNames, type TransportName } from '../src';
import { LOG_COMMAND, logRedirectOption } from '../src/commands/log-command';
import { HelperDaemon, defaultHelperSocketPath } from '../src/transports/helper-daemon';

const USAGE = `usage:
  fdbridge helper [--socket PATH] [--allow-uid UID[,UID...]] [--verbose]
      Run a helper daemon (default socket: ${defaultHelperSocketPath()}).
  fdbridge log [--transport ${transportNames().join('|')}] [--socket PATH] [--logfile [!]PATH|-|-stdout|-stderr] LINE...
      Run the log command somewhere, redirect its log, and log each LINE.
`;

class UsageError extends Error {}

async function helperMain(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { socket: { type: 'string' }, 'allow-uid': { type: 'string' }, verbose: { type: 'boolean' } },
    strict: true,
  });
  const allowUids = (values['allow-uid'] ?? '')
    .split(',')
    .filter((s) => s !== '')
    .map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`--allow-uid: ${s} is not a uid`);
      return n;
    });
  const daemon = HelperDaemon.start({
    ...(values.socket !== undefined ? { socketPath: values.socket } : {}),
    allowUids,
    log: values.verbose ? (line) => process.stderr.write(`fdbridge helper: ${line}\n`) : undefined,
  });
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.stderr.write(`fdbridge helper: ${signal}: closing\n`);
      daemon.close().finally(resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  // Announce only once the signal handlers are in place.
  process.stdout.write(`fdbridge helper listening on ${daemon.socketPath} (pid ${process.pid})\n`);
  await stopped;
  return 0;
}

/**
 * `--logfile -stderr`: its values start with a dash, which parseArgs would
 * take for an option; join each `--logfile` with the word after it.
 */
function joinLogfileValue(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--logfile' && i + 1 < argv.length) out.push(`--logfile=${argv[++i]}`);
    else out.push(a);
  }
  return out;
}

async function logMain(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: joinLogfileValue(argv),
    options: { transport: { type: 'string', default: 'child' }, socket: { type: 'string' }, logfile: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  const transport = values.transport as TransportName;
  if (!transportNames().includes(transport)) throw new UsageError(`--transport must be one of ${transportNames().join(', ')}`);
  const conn = await connect(transport, {
    command: LOG_COMMAND,
    ...(values.socket !== undefined ? { socketPath: values.socket } : {}),
  });
  try {
    if (values.logfile !== undefined) await logRedirectOption(conn, values.logfile);
    for (const line of positionals) await conn.call('log', line);
  } finally {
    await conn.close();
  }
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'helper':
      return helperMain(rest);
    case 'log':
      return logMain(rest);
    case undefined:
    case '-h':
    case '--help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${command}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`fdbridge: ${(err as Error).message}\n${USAGE}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`fdbridge: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
