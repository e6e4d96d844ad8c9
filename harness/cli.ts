#!/usr/bin/env node
/**
 * The fdbridge command line. Each subcommand lives in harness/cli/<name>.ts
 * and exports `USAGE` (its --help text) and `main(argv): Promise<number>` (the
 * exit status, harness/cli/usage.ts EXIT); it is loaded only when used.
 *
 * Errors: a UsageError prints one line and the subcommand's synopsis (exit 2);
 * any other error prints one line naming what went wrong (exit 3), and its
 * stack only under --debug. A stdout whose reader is gone (EPIPE) ends the
 * CLI quietly.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { packageRoot } from '../src/paths';
import { EXIT, UsageError } from './cli/usage';

interface SubcommandEntry {
  module: string;
  /** One line for the list of subcommands in the help text. */
  summary: string;
}

const SUBCOMMANDS: Record<string, SubcommandEntry> = {
  run: {
    module: './cli/run',
    summary: 'run scenarios x transports under the fd-leak oracle; results.json and an HTML report',
  },
  compare: {
    module: './cli/compare',
    summary: 'what started failing or leaking, and what got slower, between two results files',
  },
  merge: {
    module: './cli/merge',
    summary: 'one results file and report from the shards of a run (run --shard i/n)',
  },
  bench: {
    module: './cli/bench',
    summary: 'latency and throughput per transport against in-run anchors (Node, C, Python)',
  },
  helper: {
    module: './cli/helper',
    summary: 'run a helper daemon that serves commands to clients over a Unix socket',
  },
  serve: {
    module: './cli/serve',
    summary: "serve a 'remote' connection on stdin/stdout (started by the client through ssh, docker exec, ...)",
  },
  log: {
    module: './cli/log',
    summary: 'run the log command somewhere, redirect its log to a file the CLI opened, log lines',
  },
};

interface SubcommandModule {
  USAGE: string;
  main(argv: string[]): Promise<number>;
}

function version(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

function globalUsage(): string {
  const width = Math.max(...Object.keys(SUBCOMMANDS).map((n) => n.length));
  return `usage: fdbridge <subcommand> [options]     (fdbridge <subcommand> --help for its options)

subcommands:
${Object.entries(SUBCOMMANDS)
  .map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`)
  .join('\n')}

options:
  --help, -h     this text (after a subcommand: that subcommand's options)
  --version      the installed version
  --debug        on an error, print its stack (and causes), not only its message

exit status: 0 ok; 1 the subcommand found a failure (a failed or leaking row, a regression,
a transport that failed); 2 usage error; 3 the subcommand could not run (see its message).
`;
}

/** Words before a `--` terminator: only there are `--help` and `--debug` options. */
function optionWords(argv: readonly string[]): readonly string[] {
  const end = argv.indexOf('--');
  return end === -1 ? argv : argv.slice(0, end);
}

function loadSubcommand(name: string): SubcommandModule {
  const entry = SUBCOMMANDS[name] as SubcommandEntry;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(entry.module) as SubcommandModule;
}

/** The error's message (one line per line of it), or with --debug its stack and causes. */
function describeError(err: unknown, debug: boolean): string {
  if (!(err instanceof Error)) return String(err);
  if (!debug) return err.message;
  let text = err.stack ?? `${err.name}: ${err.message}`;
  for (let cause = err.cause; cause !== undefined; cause = cause instanceof Error ? cause.cause : undefined) {
    text += `\ncaused by: ${cause instanceof Error ? (cause.stack ?? cause.message) : String(cause)}`;
  }
  return text;
}

/**
 * A reader that stops reading (`fdbridge run --list | head -1`) is no error
 * of the subcommand's: the CLI exits at once, quietly, with the status it
 * has so far (0 unless a failure was already found). process.exit() runs
 * the exit clean-ups (harness/exit-cleanup.ts: the helper daemon, the
 * temporary directories). Not for `serve`, whose channel is stdout: it
 * moves fd 1 away before the runtime's process.stdout may exist, and ends
 * the channel itself.
 */
function quietOnClosedStdout(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit();
  });
}

async function main(argv: string[]): Promise<number> {
  const debug = optionWords(argv).includes('--debug');
  // --debug is global: accepted before or after the subcommand's name.
  const words = debug ? [...optionWords(argv).filter((a) => a !== '--debug'), ...argv.slice(optionWords(argv).length)] : argv;
  let [name, ...rest] = words;
  if (name !== 'serve') quietOnClosedStdout();
  if (name === 'help') {
    // `fdbridge help run` = `fdbridge run --help`
    if (rest[0] === undefined) name = '--help';
    else [name, rest] = [rest[0], ['--help']];
  }
  if (name === undefined) {
    process.stderr.write(globalUsage());
    return EXIT.usage;
  }
  if (name === '--help' || name === '-h') {
    process.stdout.write(globalUsage());
    return EXIT.ok;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`${version()}\n`);
    return EXIT.ok;
  }
  if (!Object.hasOwn(SUBCOMMANDS, name)) {
    process.stderr.write(`fdbridge: ${name.startsWith('-') ? 'unknown option' : 'unknown subcommand'} ${name}\n${globalUsage()}`);
    return EXIT.usage;
  }
  const subcommand = loadSubcommand(name);
  if (optionWords(rest).some((a) => a === '--help' || a === '-h')) {
    process.stdout.write(`usage: fdbridge ${subcommand.USAGE.trimEnd()}\n`);
    return EXIT.ok;
  }
  try {
    return await subcommand.main(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      // The synopsis (USAGE's first paragraph), not the whole help.
      const synopsis = subcommand.USAGE.split(/\n\s*\n/)[0]?.trimEnd();
      process.stderr.write(`fdbridge ${name}: ${err.message}\nusage: fdbridge ${synopsis}\n(fdbridge ${name} --help for every option)\n`);
      return EXIT.usage;
    }
    process.stderr.write(`fdbridge ${name}: ${describeError(err, debug)}\n`);
    return EXIT.error;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // Only loading a subcommand can get here (a broken install: the addon or dist/ missing).
    const debug = process.argv.includes('--debug');
    process.stderr.write(`fdbridge: ${describeError(err, debug)}\n`);
    process.exitCode = EXIT.error;
  },
);
