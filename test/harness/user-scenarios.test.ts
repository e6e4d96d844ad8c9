/**
 * A user's own TypeScript scenarios and command module, with no build step,
 * from a project directory outside this repository: the README's
 * walkthrough (its three code blocks, as written) run with the CLI. The
 * project has fdbridge in node_modules (a link to this checkout, as `npm
 * link` makes it), and nothing else: no tsconfig, no compiled file.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

import ts from 'typescript';

import type { ResultsFile } from '../../harness/types';
import { packageRoot } from '../../src/paths';
import { CLI } from '../util/processes';
import { readmeBlock } from '../util/readme';

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  results: ResultsFile;
}

let project = '';

/**
 * `fdbridge run --scenarios ./fd-scenarios` in the project, as its CI would
 * run it, with the CLI's own settle time (1000 ms): the helper daemon closes
 * its end of an ended connection (the accepted socket, the client's pidfd)
 * after the client's close() has returned, and the leak oracle counts them
 * as leaks if they are still open when the settle time is over (with
 * --settle 0 the helper row fails so). On a loaded machine the daemon may
 * wait for a CPU that long.
 */
function runInProject(extra: string[] = []): Promise<CliRun> {
  const json = join(project, 'results.json');
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [CLI, 'run', '--scenarios', './fd-scenarios', '--json', json, ...extra],
      // No time limit of its own: the run ends by its rows' deadlines (--timeout, 30 s each).
      { cwd: project, maxBuffer: 16 << 20, env: { ...process.env, FDBRIDGE_SCENARIOS_DIR: '' } },
      (err, stdout, stderr) => {
        try {
          const results = JSON.parse(readFileSync(json, 'utf8')) as ResultsFile;
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, results });
        } catch {
          reject(new Error(`no results (exit ${String(err?.code)}):\n${stdout}\n${stderr}`));
        }
      },
    );
  });
}

/**
 * The run's exit status where it is `expected`; otherwise the status with
 * all the run printed (each failing row's verdict, error and leaks), which
 * a jest diff of the number alone would not show.
 */
function exitStatus(r: CliRun, expected: number): number | { code: number; stdout: string; stderr: string } {
  return r.code === expected ? r.code : { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

/** The rows (skips left out) whose status is not `status`, whole, to show what they say. */
function rowsNotWith(r: CliRun, status: string): ResultsFile['results'] {
  return r.results.results.filter((x) => x.status !== 'skip' && x.status !== status);
}

/** Where each transport's command runs, as the leak oracle names the process. */
const HOLDER: Record<string, string> = { direct: 'client', worker: 'client', child: 'child', pidfd: 'child', helper: 'helper', remote: 'remote' };
/** What the holder holds: the file itself, or on remote the relay's pipe to it. */
const HELD = (transport: string): RegExp => (transport === 'remote' ? /^pipe:\[\d+\]$/ : /\/out\.archive$/);

beforeAll(() => {
  project = realpathSync(mkdtempSync(join(tmpdir(), 'fdbridge-user-project-')));
  // Outside the repository: nothing of it above this directory.
  expect(relative(packageRoot, project).startsWith('..')).toBe(true);
  mkdirSync(join(project, 'node_modules'));
  symlinkSync(packageRoot, join(project, 'node_modules', 'fdbridge'), 'dir');
  mkdirSync(join(project, 'src'));
  mkdirSync(join(project, 'fd-scenarios'));
  writeFileSync(join(project, 'src', 'archive-command.ts'), readmeBlock('walkthrough-command'));
  writeFileSync(join(project, 'fd-scenarios', 'archive-closes-its-output.scenario.ts'), readmeBlock('walkthrough-scenario'));
});

afterAll(() => {
  rmSync(project, { recursive: true, force: true });
});

test("the walkthrough's files type-check as a user's project (against the package's own types)", () => {
  const files = [join(project, 'src', 'archive-command.ts'), join(project, 'fd-scenarios', 'archive-closes-its-output.scenario.ts')];
  const program = ts.createProgram(files, {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    target: ts.ScriptTarget.ES2022,
    types: ['node'],
    typeRoots: [join(packageRoot, 'node_modules', '@types')],
    skipLibCheck: true,
  });
  expect(ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))).toEqual([]);
  // A hang guard only: a whole type-check in this process took 10 s at load average 20.
}, 120_000);

test('the buggy command: every row fails with the leaked output file, in the process that holds it', async () => {
  const r = await runInProject();
  expect(exitStatus(r, 1)).toEqual(1);
  const rows = r.results.results.filter((x) => x.status !== 'skip');
  expect(rows.map((x) => x.transport).sort()).toEqual(expect.arrayContaining(['child', 'direct', 'helper', 'worker']));
  for (const row of rows) {
    expect(row).toMatchObject({ scenario: 'archive-closes-its-output', status: 'fail' });
    expect(row.leaks).toEqual([{ pid: expect.any(Number), role: HOLDER[row.transport], fd: expect.any(Number), target: expect.stringMatching(HELD(row.transport)) }]);
  }
  expect(r.stdout).toMatch(/undeclared leak of 1 fd\(s\): pid \d+ \(child\): fd \d+ -> \/.*\/out\.archive/);
  // Loaded as they are: nothing was compiled into the project.
  const listing = (dir: string): string[] => readdirSync(join(project, dir));
  expect([...listing('src'), ...listing('fd-scenarios')].sort()).toEqual(['archive-closes-its-output.scenario.ts', 'archive-command.ts']);
}, 120_000);

test("declared as the leak it reproduces, it is a caught expected failure; the README's fix makes it pass", async () => {
  const scenarioFile = join(project, 'fd-scenarios', 'archive-closes-its-output.scenario.ts');
  const scenario = readFileSync(scenarioFile, 'utf8');
  const declared = scenario.replace(
    /(\n {2}description: .*\n)/,
    "$1  expect: 'leak',\n  failure: { leaks: [{ target: /out\\.archive$/ }, { role: 'remote', target: /^pipe:/ }] },\n",
  );
  expect(declared).not.toBe(scenario);
  writeFileSync(scenarioFile, declared);
  const xfail = await runInProject();
  expect(rowsNotWith(xfail, 'expected-fail')).toEqual([]);
  expect(exitStatus(xfail, 0)).toEqual(0);
  writeFileSync(scenarioFile, scenario);

  const commandFile = join(project, 'src', 'archive-command.ts');
  const buggy = readFileSync(commandFile, 'utf8');
  const fixed = buggy
    .replace("import { writeSync } from 'node:fs';", "import { closeSync, writeSync } from 'node:fs';")
    .replace(/ {2}close\(\): void \{\n[\s\S]*?\n {2}\}\n/, readmeBlock('walkthrough-fix'));
  expect(fixed).toContain('closeSync(this.#out)');
  writeFileSync(commandFile, fixed);
  const r = await runInProject();
  expect(rowsNotWith(r, 'pass')).toEqual([]);
  expect(exitStatus(r, 0)).toEqual(0);
  const rows = r.results.results.filter((x) => x.status !== 'skip');
  expect(rows.length).toBeGreaterThanOrEqual(4);
  expect(rows.filter((x) => x.leaks.length > 0)).toEqual([]);
  // Two runs of the CLI, each bounded by runInProject's own limit: jest's limit is only a hang guard here.
}, 300_000);

test('a scenario directory with no scenario file, and a .ts scenario that does not parse, are clear errors', async () => {
  const empty = join(project, 'empty');
  mkdirSync(empty);
  const none = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile(process.execPath, [CLI, 'run', '--scenarios', empty], { cwd: project }, (err, _o, stderr) =>
      resolve({ code: err ? Number(err.code) : 0, stderr }),
    ),
  );
  expect(none.code).not.toBe(0);
  expect(none.stderr).toContain(`${empty} has no *.scenario.ts or *.scenario.js file`);

  const broken = join(project, 'broken');
  mkdirSync(broken);
  writeFileSync(join(broken, 'broken.scenario.ts'), 'export default {\n  name: "broken",\n  run(ctx: ) {}\n};\n');
  const bad = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile(process.execPath, [CLI, 'run', '--scenarios', broken], { cwd: project }, (err, _o, stderr) =>
      resolve({ code: err ? Number(err.code) : 0, stderr }),
    ),
  );
  expect(bad.code).toBe(3);
  expect(bad.stderr).toMatch(/cannot compile .*broken\.scenario\.ts: .*\(3:/);
}, 120_000);
