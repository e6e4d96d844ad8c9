/**
 * What every subcommand shares: the usage error, the argument parser, and
 * how the running CLI names itself in the hints it prints.
 *
 * A subcommand module (harness/cli/<name>.ts) exports `USAGE` (its
 * `--help` text, starting with the subcommand's name) and
 * `main(argv): Promise<number>` (the exit status: EXIT.*). cli.ts answers
 * `--help` from USAGE without calling main.
 */
import { basename, relative } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { validateTimeoutMs } from '../../src/validate';

/** The documented exit statuses of every subcommand. */
export const EXIT = {
  /** Done, nothing wrong found. */
  ok: 0,
  /** The subcommand ran and found a failure: a failed or leaking row, a regression, a transport that failed. */
  failed: 1,
  /** The command line was wrong: unknown option, bad value, nothing selected. */
  usage: 2,
  /** The subcommand could not do what was asked (a file it cannot read or write, a socket it cannot listen on, ...). */
  error: 3,
} as const;

/** A command-line mistake: reported with the subcommand's usage and exit status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

type Options = NonNullable<ParseArgsConfig['options']>;
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

/**
 * `util.parseArgs`, with errors a user can act on. A string option always
 * takes the next word as its value, even one that starts with a dash
 * (`--repeat -1` is then "--repeat must be ...", `--logfile -stderr` is
 * stderr), as getopt does; strict parseArgs would call that ambiguous. Every
 * string option needs a non-empty value. Throws UsageError for an unknown
 * option, a missing or empty value, a value given to a boolean option, and a
 * positional argument where the subcommand takes none.
 */
export function parseSubcommandArgs<const O extends Options>(argv: string[], options: O, { positionals = false } = {}): Parsed<O> {
  const parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: false, tokens: true });
  for (const token of parsed.tokens) {
    if (token.kind === 'positional') {
      if (!positionals) throw new UsageError(`unexpected argument ${JSON.stringify(token.value)}`);
      continue;
    }
    if (token.kind !== 'option') continue;
    const spec = Object.hasOwn(options, token.name) ? options[token.name] : undefined;
    if (spec === undefined) throw new UsageError(`unknown option ${token.rawName}`);
    if (spec.type === 'boolean' && token.value !== undefined) throw new UsageError(`${token.rawName} takes no value`);
    if (spec.type === 'string' && token.value === undefined) throw new UsageError(`${token.rawName} needs a value`);
    if (spec.type === 'string' && token.value === '') throw new UsageError(`${token.rawName} needs a value, not an empty string`);
  }
  return { values: parsed.values, positionals: parsed.positionals } as Parsed<O>;
}

/** Parses a whole number >= min given to option `name`. */
export function parseInteger(name: string, text: string, min = 1): number {
  const n = Number(text);
  if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${name} must be an integer >= ${min}, not ${text}`);
  }
  return n;
}

/** `text` as a timer's delay in ms, an integer from `min` to 2^31 - 1 (setTimeout's range); else a UsageError. */
export function parseTimeout(name: string, text: string, min = 1): number {
  const n = /^-?\d+$/.test(text.trim()) ? Number(text) : Number.NaN;
  try {
    return validateTimeoutMs(n, name, min, text);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/**
 * How to run this CLI again, for hints such as "to rerun a failed row": the
 * `fdbridge` bin when that is how it was started (npx, node_modules/.bin, a
 * global install), else `node <path to cli.js>` (a checkout).
 */
export function cliInvocation(): string {
  const script = process.argv[1] ?? 'fdbridge';
  if (basename(script) === 'fdbridge') return 'fdbridge';
  const rel = relative(process.cwd(), script);
  return `node ${rel.startsWith('..') || rel === '' ? script : rel}`;
}

/**
 * `text` as one word of a POSIX shell's command line: as it is when it holds
 * only letters, digits and `_ . / : = @ % + , -` (nothing a shell reads),
 * else in single quotes, a single quote inside written '\'' (close, an
 * escaped quote, reopen), so that nothing in it (quotes, `$`, `;`, `&`,
 * `*`, spaces) is read by the shell.
 */
export function shellWord(text: string): string {
  if (/^[A-Za-z0-9_./:=@%+,-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, "'\\''")}'`;
}
