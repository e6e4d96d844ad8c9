/**
 * scripts/mutants-by-hand/run.sh's verdicts, with a fake jest (MUTANT_JEST) in
 * a throw-away repository: KILLED only when jest ran and a test failed other
 * than by its per-test timeout; TIMEOUT for that timeout or a run past
 * MUTANT_TIMEOUT; ERROR when the mutant was not applied or jest ran no suite;
 * and the source and its dist/ module are put back after each mutant, also
 * when the run is killed while a mutant is in place. classify.mjs is checked
 * against a model on generated jest results.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import fc from 'fast-check';

const root = resolve(__dirname, '../..');
const scripts = join(root, 'scripts', 'mutants-by-hand');
const SOURCE = 'export function f(a: number): number {\n  return a + 1;\n}\n';
const DIST = 'exports.f = (a) => a + 1;\n';

// The fake jest: does what FAKE says, after noting whether the mutant is in place.
const FAKE = `
const fs = require('fs');
const out = process.argv.find((a) => a.startsWith('--outputFile=')).slice(13);
fs.appendFileSync('seen', (fs.readFileSync('src/x.ts', 'utf8') !== ${JSON.stringify(SOURCE)}) + ' ' + (fs.readFileSync('dist/src/x.js', 'utf8') !== ${JSON.stringify(DIST)}) + '\\n');
const test = (status, failureMessages = []) => ({ status, failureMessages });
const suite = (tests, message = '') => ({ status: tests.some((t) => t.status === 'failed') || tests.length === 0 ? 'failed' : 'passed', message, assertionResults: tests });
const report = (suites, runtime = 0) => {
  const all = suites.flatMap((s) => s.assertionResults);
  fs.writeFileSync(out, JSON.stringify({ success: suites.every((s) => s.status === 'passed'), numRuntimeErrorTestSuites: runtime,
    numFailedTests: all.filter((t) => t.status === 'failed').length, numPassedTests: all.filter((t) => t.status === 'passed').length, numTotalTests: all.length, testResults: suites }));
};
switch (process.env.FAKE) {
  case 'fail': report([suite([test('passed'), test('failed', ['expect(received).toBe(expected)'])])]); process.exit(1);
  case 'timeout': report([suite([test('passed'), test('failed', ['thrown: "Exceeded timeout of 30000 ms for a test.'])])]); process.exit(1);
  case 'pass': report([suite([test('passed'), test('passed')])]); process.exit(0);
  case 'load': report([suite([], 'Test suite failed to run\\n\\n  SyntaxError: Unexpected token')], 1); process.exit(1);
  case 'crash': process.exit(1);
  case 'hang': setInterval(() => undefined, 1000); break;
  case 'kill': process.kill(Number(process.env.RUNNER), 'SIGTERM'); setInterval(() => undefined, 1000); break;
}
`;

function repository(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mutants-by-hand-'));
  mkdirSync(join(dir, 'src'));
  mkdirSync(join(dir, 'dist', 'src'), { recursive: true });
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  writeFileSync(join(dir, 'package.json'), '{}\n');
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { outDir: 'dist', rootDir: '.', module: 'commonjs', target: 'es2022' } }));
  writeFileSync(join(dir, 'src', 'x.ts'), SOURCE);
  writeFileSync(join(dir, 'dist', 'src', 'x.js'), DIST);
  writeFileSync(join(dir, 'fake-jest.js'), FAKE);
  writeFileSync(join(dir, '.gitignore'), 'node_modules\ndist\nseen\n');
  const git = (...args: string[]) => execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', ...args], { cwd: dir, stdio: 'ignore' });
  git('init', '-q');
  git('add', '.');
  git('commit', '-q', '-m', 'x');
  return dir;
}

/** Runs run.sh over mutants `which` of src/x.ts with the fake doing `fake`; the log's verdicts. */
function run(dir: string, fake: string, which: string, extra: Record<string, string> = {}): { verdicts: string[]; seen: string[]; status: number | null } {
  const log = join(dir, `log-${fake}-${which.replace(/ /g, "-")}-${Date.now()}`);
  // bash -c 'exec ...' so that RUNNER, the script's pid, is known to the fake before it starts
  const child = spawnSync('bash', ['-c', `RUNNER=$$ exec ${join(scripts, 'run.sh')} src/x.ts 1-3 ${log} "${which}" -- a.test.ts`], {
    cwd: dir,
    env: { ...process.env, MUTANT_JEST: `node ${join(dir, 'fake-jest.js')}`, FAKE: fake, ...extra },
    stdio: 'ignore',
  });
  let text = '';
  try {
    text = readFileSync(log, 'utf8');
  } catch {
    // no line written
  }
  let seen = '';
  try {
    seen = readFileSync(join(dir, 'seen'), 'utf8');
    rmSync(join(dir, 'seen'));
  } catch {
    // the fake was not run
  }
  return { verdicts: text.split('\n').filter(Boolean).map((l) => l.split('\t')[0] ?? ''), seen: seen.split('\n').filter(Boolean), status: child.status };
}

function untouched(dir: string): void {
  expect(readFileSync(join(dir, 'src', 'x.ts'), 'utf8')).toBe(SOURCE);
  expect(readFileSync(join(dir, 'dist', 'src', 'x.js'), 'utf8')).toBe(DIST);
  expect(execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: dir, encoding: 'utf8' })).toBe('');
}

describe('run.sh', () => {
  let dir: string;
  beforeAll(() => {
    dir = repository();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test.each([
    ['fail', 'KILLED'],
    ['timeout', 'TIMEOUT'],
    ['pass', 'SURVIVED'],
    ['load', 'ERROR'],
    ['crash', 'ERROR'],
  ])('jest doing %s is %s, with the mutant in source and dist while it runs, and both put back', (fake, verdict) => {
    const { verdicts, seen } = run(dir, fake, '0 1');
    expect(verdicts).toEqual([verdict, verdict]);
    expect(seen).toEqual(['true true', 'true true']);
    untouched(dir);
  });

  test('a run past MUTANT_TIMEOUT is killed and is a TIMEOUT', () => {
    const { verdicts } = run(dir, 'hang', '0', { MUTANT_TIMEOUT: '2' });
    expect(verdicts).toEqual(['TIMEOUT']);
    untouched(dir);
  });

  test('a mutant that cannot be applied (apply.mjs fails) is an ERROR, and jest is not run', () => {
    const { verdicts, seen } = run(dir, 'pass', '999 0');
    expect(verdicts).toEqual(['ERROR', 'SURVIVED']);
    expect(seen).toEqual(['true true']);
    untouched(dir);
  });

  test('killed while a mutant is in place, the run puts source and dist back and logs nothing for it', () => {
    const { verdicts, seen, status } = run(dir, 'kill', '0 1');
    expect(seen).toEqual(['true true']);
    expect(verdicts).toEqual([]);
    expect(status).toBe(143);
    untouched(dir);
  });
});

describe('classify.mjs', () => {
  const timeout = 'thrown: "Exceeded timeout of 5000 ms for a test.';
  const assertion = fc.record({
    status: fc.constantFrom('passed', 'failed', 'pending'),
    failureMessages: fc.array(fc.oneof(fc.constant(timeout), fc.constant('Exceeded timeout of 10 ms for a hook.'), fc.string())),
  });
  const suite = fc.oneof(
    fc.array(assertion, { maxLength: 4 }).map((tests) => ({ status: tests.some((t) => t.status === 'failed') ? 'failed' : 'passed', message: '', assertionResults: tests })),
    fc.constant({ status: 'failed', message: 'Test suite failed to run', assertionResults: [] }),
  );
  const results = fc.array(suite, { maxLength: 3 }).map((suites) => {
    const all = suites.flatMap((s) => s.assertionResults);
    const failed = all.filter((t) => t.status === 'failed').length;
    return { success: suites.every((s) => s.status === 'passed'), numRuntimeErrorTestSuites: 0, numFailedTests: failed, numPassedTests: all.filter((t) => t.status === 'passed').length, numTotalTests: all.length, testResults: suites };
  });

  test('KILLED when a test failed other than by a timeout, TIMEOUT when only by timeouts, SURVIVED when some passed and none failed, ERROR otherwise', () => {
    const cases = fc.sample(results, { numRuns: 200, seed: Number(process.env.FDBRIDGE_MODEL_SEED ?? Date.now() % 1e9) });
    const dir = mkdtempSync(join(tmpdir(), 'classify-'));
    try {
      const files = cases.map((c, i) => {
        const file = join(dir, `${i}.json`);
        writeFileSync(file, JSON.stringify(c));
        return file;
      });
      files.push(join(dir, 'missing.json'));
      const got = execFileSync('node', [join(scripts, 'classify.mjs'), ...files], { encoding: 'utf8' }).split('\n').filter(Boolean).map((l) => l.split(' ')[0]);
      const model = (r: (typeof cases)[number]): string => {
        if (r.testResults.some((s) => s.status === 'failed' && s.assertionResults.length === 0)) return 'ERROR';
        const failed = r.testResults.flatMap((s) => s.assertionResults).filter((t) => t.status === 'failed');
        const timedOut = (t: { failureMessages: string[] }) => t.failureMessages.some((m) => /Exceeded timeout of \d+ ms for a (test|hook)/.test(m));
        if (failed.length > 0) return failed.every(timedOut) ? 'TIMEOUT' : 'KILLED';
        return r.numPassedTests > 0 ? 'SURVIVED' : 'ERROR';
      };
      expect(got).toEqual([...cases.map(model), 'ERROR']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
