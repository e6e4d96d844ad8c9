#!/usr/bin/env node
/**
 * The fdbridge command line. Each subcommand lives in harness/commands/<name>.ts
 * and exports `main(argv): Promise<number>` (the exit status); it is loaded
 * only when used.
 */
import { defaultHelperSocketPath } from '../src/transports/helper-daemon';
import { UsageError } from './commands/usage';

const COMMANDS: Record<string, { module: string; usage: string }> = {
  helper: {
    module: './commands/helper',
    usage: `helper [--socket PATH] [--allow-uid UID[,UID...]] [--verbose]
      Run a helper daemon (default socket: ${defaultHelperSocketPath()}; @NAME for an abstract name).`,
  },
  run: {
    module: './commands/run',
    usage: `run [--transport a,b] [--scenario PATTERN] [--bench] [--repeat N] [--seed S] [--shard i/n] [--json FILE] [--html FILE] [--profile NAME]
      Run the scenarios on every transport under the fd-leak oracle (\`fdbridge run --help\` for all options).`,
  },
  compare: {
    module: './commands/compare',
    usage: `compare OLD.json NEW.json [--threshold RATIO]
      What started failing or leaking, and what got slower (p50 ratio, default 1.25) between two results files.`,
  },
  merge: {
    module: './commands/merge',
    usage: `merge SHARD.json... [--json FILE] [--html FILE]
      One results file and report from the shards of a run (run --shard i/n); an error if one is missing or they disagree.`,
  },
  log: {
    module: './commands/log',
    usage: `log [--transport direct|worker|child|helper] [--socket PATH] [--logfile [!]PATH|-|-stdout|-stderr] LINE...
      Run the log command somewhere, redirect its log, and log each LINE.`,
  },
  bench: {
    module: './commands/bench',
    usage: `bench [--json FILE] [--transport a,b] [--time MS] [--count N] [--no-python]
      Latency, batch and pipelined throughput and a long run per transport, against in-run anchors (Node, C, Python).`,
  },
};

/** The usage text: one entry per subcommand in COMMANDS. */
function usage(): string {
  return `usage: fdbridge <command> [options]\n${Object.entries(COMMANDS)
    .map(([, c]) => `  fdbridge ${c.usage}`)
    .join('\n')}\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help') {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (!command) throw new UsageError(`unknown command ${name}`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(command.module) as { main(argv: string[]): Promise<number> };
  return mod.main(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`fdbridge: ${(err as Error).message}\n${usage()}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`fdbridge: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    }
  },
);
