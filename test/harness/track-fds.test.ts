/**
 * --track-fds and { trackFds: true }: a leaked fd names where it was opened.
 * The scenarios are TypeScript files in a directory outside the repository
 * (loaded with no build step, so their stack lines are the .ts file's own):
 * one leaks an fd it opened from JS, one an fd fdbridge's native addon
 * opened, and one a command in a child process that adopts a duplicated fd
 * and keeps it (received over the socket: the native recvmsg stack).
 */
import { mkdirSync, mkdtempSync, openSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ResultRow, ResultsFile } from '../../harness/types';
import { checkFdLeaks } from '../../src/leak-check';
import { closeFd } from '../../src';
import { packageRoot } from '../../src/paths';
import { runCli, type CliRun } from '../util/processes';

let project = '';

const JS_LEAK = `import { openSync } from 'node:fs';
import { join } from 'node:path';

import { defineScenario } from 'fdbridge/scenario';

export default defineScenario({
  name: 'leak-from-js',
  description: 'opens a file from JS and never closes it',
  transports: ['direct'],
  expect: 'leak',
  failure: { leaks: [{ target: /left-open\\.txt$/ }] },
  async run(ctx) {
    openSync(join(ctx.tmpdir, 'left-open.txt'), 'w'); // line 13
  },
});
`;

// fdbridge's addon stands for any native addon (it is not exported: loaded by path).
const NATIVE_LEAK = `import { native } from ${JSON.stringify(join(packageRoot, 'dist', 'src', 'native'))};
import { defineScenario } from 'fdbridge/scenario';

export default defineScenario({
  name: 'leak-from-native',
  description: "fdbridge's native addon makes a memfd that nobody closes",
  transports: ['direct'],
  expect: 'leak',
  failure: { leaks: [{ target: '/memfd:leaked-by-native (deleted)' }] },
  async run() {
    native.memfd('leaked-by-native'); // line 11
  },
});
`;

const COMMAND = `import type { CommandContext } from 'fdbridge';

export class KeepCommand {
  constructor(readonly context: CommandContext) {}
  keep(fd: number): void {
    this.context.adoptFd(fd); // and never closed
  }
}
`;

const CHILD_LEAK = `import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';

import { defineScenario } from 'fdbridge/scenario';

export default defineScenario({
  name: 'leak-in-child',
  description: 'a command in a child process adopts a duplicated fd and keeps it',
  transports: ['child'],
  expect: 'leak',
  failure: { leaks: [{ target: /kept\\.txt$/, role: 'child' }] },
  async run(ctx) {
    const fd = openSync(join(ctx.tmpdir, 'kept.txt'), 'w');
    const conn = await ctx.connect({ module: join(__dirname, 'keep-command.ts'), export: 'KeepCommand' });
    await conn.call('keep', await conn.dupFileDescriptor(fd));
    closeSync(fd);
    await conn.close();
  },
});
`;

const cli = (args: string[]): Promise<CliRun> => runCli(args, { cwd: project });

beforeAll(() => {
  project = realpathSync(mkdtempSync(join(tmpdir(), 'fdbridge-track-fds-')));
  mkdirSync(join(project, 'node_modules'));
  symlinkSync(packageRoot, join(project, 'node_modules', 'fdbridge'), 'dir');
  mkdirSync(join(project, 'fd-scenarios'));
  writeFileSync(join(project, 'fd-scenarios', 'leak-from-js.scenario.ts'), JS_LEAK);
  writeFileSync(join(project, 'fd-scenarios', 'leak-from-native.scenario.ts'), NATIVE_LEAK);
  writeFileSync(join(project, 'fd-scenarios', 'leak-in-child.scenario.ts'), CHILD_LEAK);
  writeFileSync(join(project, 'fd-scenarios', 'keep-command.ts'), COMMAND);
});

afterAll(() => {
  rmSync(project, { recursive: true, force: true });
});

describe('fdbridge run --track-fds', () => {
  let run: { code: number; stdout: string; stderr: string };
  let results: ResultsFile;
  const row = (name: string): ResultRow => results.results.find((r) => r.scenario === name) as ResultRow;

  beforeAll(async () => {
    const json = join(project, 'tracked.json');
    run = await cli(['run', '--scenarios', './fd-scenarios', '--track-fds', '--settle', '300', '--json', json, '--html', join(project, 'tracked.html')]);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    results = require(json) as ResultsFile;
  }, 150_000);

  test('every row caught its declared leak', () => {
    expect(run.code).toBe(0);
    expect(results.options.trackFds).toBe(true);
    expect(results.results.map((r) => `${r.scenario} ${r.status}`).sort()).toEqual([
      'leak-from-js expected-fail',
      'leak-from-native expected-fail',
      'leak-in-child expected-fail',
    ]);
  });

  test('a leak from JS names the JS call and the scenario file and line that opened it', () => {
    const [leak] = row('leak-from-js').leaks;
    expect(leak?.openedAt?.call).toBe('fs.openSync');
    expect(leak?.openedAt?.js?.[0]).toContain(`${join(project, 'fd-scenarios', 'leak-from-js.scenario.ts')}:13:`);
    // A file can be opened again at its number by a call no recorder sees: the line says so.
    expect(leak?.openedAt?.unconfirmed).toBe(true);
    expect(run.stdout).toMatch(/opened by fs\.openSync, unless a close --track-fds cannot see [^\n]*\n\s+at .*leak-from-js\.scenario\.ts:13:\d+/);
  });

  test('a leak from native code names the native function, file and line, and the JS line that called it', () => {
    const [leak] = row('leak-from-native').leaks;
    expect(leak?.openedAt?.call).toBe('native.memfd');
    expect(leak?.openedAt?.native?.[0]).toMatch(/^\S+ \(.*native\/fd_ops\.cc:\d+\)$/);
    expect(leak?.openedAt?.js?.[0]).toContain(`${join(project, 'fd-scenarios', 'leak-from-native.scenario.ts')}:11:`);
    expect(run.stdout).toMatch(/native: \S+ \(.*fd_ops\.cc:\d+\)/);
  });

  test("an fd a child process received names the receive, in the child's own stack", () => {
    const [leak] = row('leak-in-child').leaks;
    expect(leak?.role).toBe('child');
    expect(leak?.openedAt?.call).toBe('recvmsg (received over a Unix socket)');
    expect(leak?.openedAt?.native?.some((f) => /scm_rights\.cc:\d+/.test(f))).toBe(true);
  });

  test('the HTML report shows where each leaked fd was opened', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const html = require('node:fs').readFileSync(join(project, 'tracked.html'), 'utf8') as string;
    expect(html).toContain('opened by fs.openSync');
    expect(html).toMatch(/leak-from-js\.scenario\.ts:13:\d+/);
    expect(html).toMatch(/native: \S+ \(.*fd_ops\.cc:\d+\)/);
  });

  test('without --track-fds no origin is recorded', async () => {
    const json = join(project, 'untracked.json');
    const r = await cli(['run', '--scenarios', './fd-scenarios', '--scenario', 'leak-from-js', '--settle', '300', '--json', json]);
    expect(r.code).toBe(0);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const untracked = require(json) as ResultsFile;
    expect(untracked.results[0]?.leaks[0]?.openedAt).toBeUndefined();
    expect(r.stdout).not.toMatch(/\n\s+opened by /);
  });
});

test('checkFdLeaks({ trackFds: true }) names the JS line of this test that opened the leaked fd', async () => {
  let fd = -1;
  const report = await checkFdLeaks(
    () => {
      fd = openSync(join(project, 'in-process.txt'), 'w');
    },
    { trackFds: true, settleMs: 100 },
  );
  try {
    expect(report.leaks).toHaveLength(1);
    expect(report.leaks[0]?.openedAt?.call).toBe('fs.openSync');
    expect(report.leaks[0]?.openedAt?.js?.[0]).toMatch(/track-fds\.test\.ts:\d+:\d+/);
  } finally {
    closeFd(fd);
  }
});
