/**
 * The command line's conventions, driven as a user drives it (the built CLI
 * in a subprocess): `--version`, `--help` for every subcommand, one-line
 * errors that name what was wrong (a stack only under --debug), the
 * subcommand's own synopsis on a usage error, and the documented exit
 * statuses (0 ok, 1 failure found, 2 usage error, 3 could not run).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { packageRoot } from '../../src/paths';
import { FIXTURE_SCENARIOS, runCli, type CliRun } from '../util/processes';

const SUBCOMMANDS = ['run', 'compare', 'merge', 'bench', 'helper', 'log'];

const cli = (args: string[]): Promise<CliRun> => runCli(args, { env: { FDBRIDGE_SCENARIOS_DIR: FIXTURE_SCENARIOS } });

const lines = (text: string): string[] => text.split('\n').filter((l) => l !== '');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-cli-test-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

test('--version prints the package version', async () => {
  const { version } = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    expect(await cli([flag])).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
  }
});

test('--help lists every subcommand and the exit statuses; no command is a usage error', async () => {
  const help = await cli(['--help']);
  expect(help.code).toBe(0);
  expect(help.stderr).toBe('');
  for (const name of SUBCOMMANDS) expect(help.stdout).toMatch(new RegExp(`^  ${name} +\\S`, 'm'));
  expect(help.stdout).toMatch(/exit status: 0 ok; 1 [^;]*; 2 usage error; 3 /);

  const none = await cli([]);
  expect(none).toEqual({ code: 2, stdout: '', stderr: help.stdout });
});

describe.each(SUBCOMMANDS)('fdbridge %s', (name) => {
  test('--help, -h and `help NAME` print its usage on stdout, exit 0', async () => {
    const runs = await Promise.all([cli([name, '--help']), cli([name, '-h']), cli(['help', name]), cli([name, '--json', 'x', '--help'])]);
    const [first] = runs;
    expect(first?.code).toBe(0);
    expect(first?.stderr).toBe('');
    expect(first?.stdout).toMatch(new RegExp(`^usage: fdbridge ${name} `));
    expect(first?.stdout).toMatch(/\nexit status: 0 /);
    for (const r of runs) expect(r).toEqual(first);
  });

  test('an unknown option: one line naming it, then its own synopsis (not the global one), exit 2', async () => {
    const r = await cli([name, '--no-such-option']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    const [first, second] = lines(r.stderr);
    expect(first).toBe(`fdbridge ${name}: unknown option --no-such-option`);
    expect(second).toMatch(new RegExp(`^usage: fdbridge ${name} `));
    expect(r.stderr).not.toMatch(/^subcommands:$/m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

test('an unknown subcommand names it and prints the list of subcommands, exit 2', async () => {
  const r = await cli(['frobnicate']);
  expect(r.code).toBe(2);
  expect(lines(r.stderr)[0]).toBe('fdbridge: unknown subcommand frobnicate');
  expect(r.stderr).toMatch(/^subcommands:$/m);
});

test.each([
  [['run', '--repeat', '-1'], 'fdbridge run: --repeat must be an integer >= 1, not -1'],
  [['run', '--repeat', '1.5'], 'fdbridge run: --repeat must be an integer >= 1, not 1.5'],
  [['run', '--repeat'], 'fdbridge run: --repeat needs a value'],
  [['run', '--transport', '', '--list'], 'fdbridge run: --transport needs a value, not an empty string'],
  [['run', '--transport', ',', '--list'], 'fdbridge run: --transport needs at least one of direct, worker, child, helper, pidfd, remote'],
  [['run', '--transport', 'nope', '--list'], 'fdbridge run: --transport: unknown transport nope; use direct, worker, child, helper, pidfd, remote'],
  [['run', '--list=yes'], 'fdbridge run: --list takes no value'],
  [['run', 'stray'], 'fdbridge run: unexpected argument "stray"'],
  [['run', '--shard', '3/2'], 'fdbridge run: --shard must be i/n with 1 <= i <= n, not 3/2'],
  [['bench', '--time', '0'], 'fdbridge bench: --time must be an integer >= 1, not 0'],
  [['helper', '--allow-uid', 'root'], 'fdbridge helper: --allow-uid must be an integer >= 0, not root'],
  [['log', '--transport', 'nope', 'x'], 'fdbridge log: --transport must be one of direct, worker, child, helper, pidfd, remote, not nope'],
  [['compare', 'only-one.json'], 'fdbridge compare: compare needs two files, OLD.json and NEW.json (got 1)'],
  [['compare', 'a.json', 'b.json', '--threshold', '0.5'], 'fdbridge compare: --threshold must be a ratio > 1, not 0.5'],
])('usage error %j: one line naming the mistake, exit 2', async (args, message) => {
  const r = await cli(args);
  expect({ code: r.code, first: lines(r.stderr)[0], stdout: r.stdout }).toEqual({ code: 2, first: message, stdout: '' });
  expect(lines(r.stderr)[1]).toMatch(new RegExp(`^usage: fdbridge ${args[0]} `));
});

test('run --scenario with no match: a usage error that says so, and no empty matrix', async () => {
  const r = await cli(['run', '--scenario', 'no-such-scenario-anywhere']);
  expect(r.code).toBe(2);
  expect(r.stdout).toBe('');
  expect(lines(r.stderr)[0]).toMatch(/^fdbridge run: no scenario matches profile default, --scenario no-such-scenario-anywhere \(`.* run --list` lists the rows\)$/);
});

test('run --scenario-name takes the whole name as it is: a name no scenario has, or a part of one, is a usage error naming it', async () => {
  for (const name of ['no-such-scenario-anywhere', 'clean-du', 'clean-*']) {
    const r = await cli(['run', '--scenario-name', name, '--list']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)[0]).toContain(`no scenario is named ${name === 'clean-*' ? "'clean-*'" : name}`);
  }
  const r = await cli(['run', '--scenario-name', 'clean-dup', '--transport', 'direct', '--list']);
  expect(r).toEqual({ code: 0, stdout: 'clean-dup direct\n', stderr: '' });
});

test('a runtime error is one line naming what failed, exit 3; --debug adds the stack and the cause', async () => {
  const socket = join(dir, 'no-such-dir', 'x.sock');
  const plain = await cli(['helper', '--socket', socket]);
  expect(plain.code).toBe(3);
  expect(plain.stdout).toBe('');
  expect(lines(plain.stderr)).toEqual([`fdbridge helper: cannot listen on ${socket}: bind failed: ENOENT (no such file or directory)`]);

  for (const args of [['--debug', 'helper', '--socket', socket], ['helper', '--socket', socket, '--debug']]) {
    const debug = await cli(args);
    expect(debug.code).toBe(3);
    expect(lines(debug.stderr)[0]).toBe(`fdbridge helper: Error: cannot listen on ${socket}: bind failed: ENOENT (no such file or directory)`);
    expect(debug.stderr).toMatch(/\n {4}at .*helper\.js:\d+/);
    expect(debug.stderr).toMatch(/\ncaused by: SystemError: bind failed: ENOENT/);
  }
});

test('compare: an unreadable file and a file that is not a results file are one-line errors, exit 3', async () => {
  const missing = join(dir, 'missing.json');
  const notResults = join(dir, 'not-results.json');
  writeFileSync(notResults, '{"rows": []}');
  const r1 = await cli(['compare', missing, notResults]);
  expect(r1.code).toBe(3);
  expect(lines(r1.stderr)).toEqual([`fdbridge compare: cannot read ${missing}: ENOENT: no such file or directory, open '${missing}'`]);
  const r2 = await cli(['compare', notResults, notResults]);
  expect(r2.code).toBe(3);
  expect(lines(r2.stderr)).toEqual([`fdbridge compare: ${notResults} is not a results file (no "results" array)`]);
});

test('a string option takes the next word even when it starts with a dash; -- ends the options', async () => {
  // `--logfile -stderr` is the log command's stderr, not an option.
  const r = await cli(['log', '--transport', 'direct', '--logfile', '-stderr', '--', '--help', '--debug']);
  expect(r).toEqual({ code: 0, stdout: '', stderr: '--help\n--debug\n' });
});

test('exit status 1 when a row fails, 0 when all pass', async () => {
  // Declares a leak and leaks nothing: the row fails.
  const failing = await cli(['run', '--scenario', 'declared-leak-none', '--transport', 'direct', '--settle', '200']);
  expect(failing.code).toBe(1);
  expect(failing.stdout).toMatch(/to rerun a failed row:\n {2}node .*cli\.js run --seed 1 --scenario-name declared-leak-none --transport direct --settle 200\n/);
  const passing = await cli(['run', '--scenario', 'clean-dup', '--transport', 'direct', '--settle', '200']);
  expect(passing.code).toBe(0);
});
