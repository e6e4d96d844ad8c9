// One mutant's outcome from jest's `--json --outputFile` result: prints `<STATUS> <summary>`.
//   KILLED    a test failed other than by jest's per-test timeout
//   TIMEOUT   every failed test failed by jest's per-test timeout
//   SURVIVED  tests ran and all passed
//   ERROR     no result, a suite that did not run (failed to load), or no test run
//   node scripts/mutants-by-hand/classify.mjs <result.json>...   (one line per file)
import fs from 'node:fs';

export function classify(result) {
  if (result === undefined) return ['ERROR', 'jest gave no result'];
  const suites = result.testResults ?? [];
  const count = `${result.numFailedTests} failed, ${result.numPassedTests} passed of ${result.numTotalTests}`;
  const notRun = suites.filter((s) => s.status === 'failed' && (s.assertionResults ?? []).length === 0);
  if (result.numRuntimeErrorTestSuites > 0 || notRun.length > 0) {
    const message = (notRun[0]?.message ?? '').split('\n').find((l) => l.trim() !== '') ?? '';
    return ['ERROR', `a suite did not run: ${message.trim().slice(0, 120)} (${count})`];
  }
  const failed = suites.flatMap((s) => (s.assertionResults ?? []).filter((a) => a.status === 'failed'));
  if (failed.length > 0) {
    const timedOut = (a) => a.failureMessages.some((m) => /Exceeded timeout of \d+ ?ms for a (test|hook)/.test(m));
    return failed.every(timedOut) ? ['TIMEOUT', `jest's test timeout (${count})`] : ['KILLED', count];
  }
  if (result.numTotalTests > 0 && result.numPassedTests > 0 && result.success) return ['SURVIVED', count];
  return ['ERROR', `no test failed, and none ran or the run failed (${count})`];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const file of process.argv.slice(2)) {
    let result;
    try {
      result = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch {
      result = undefined;
    }
    console.log(classify(result).join(' '));
  }
}
