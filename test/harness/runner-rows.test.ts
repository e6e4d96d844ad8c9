/**
 * runScenarios in this process, on the direct transport: the verdict of a
 * row from what its scenario did (an expected failure counts only as
 * declared), the row's time limit, a stop, the counters and marks, the
 * order of rows. The scenarios are small files written here, each doing
 * one thing with nothing but Node and its ctx. (runner.test.ts drives the
 * same through the CLI; here the runner's own code runs in the test process,
 * where a mutation tool's per-test coverage sees it.)
 */
import { closeSync, mkdirSync, mkdtempSync, openSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { computeTotals, discoverScenarios, runScenarios, STANDARD_COUNTERS, type RunnerOptions } from '../../harness/runner';
import type { Leak, ResultRow, ResultsFile } from '../../harness/types';
import { distPath } from '../../src/paths';

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdb-runner-rows-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

let dirs = 0;
/** A scenario directory with one `<name>.scenario.js` per entry (the body of `module.exports = {...}`). */
function scenarios(files: Record<string, string>): string {
  const d = join(dir, `s${++dirs}`);
  mkdirSync(d);
  for (const [name, body] of Object.entries(files)) {
    writeFileSync(
      join(d, `${name}.scenario.js`),
      `const fs = require('node:fs');\nconst path = require('node:path');\nmodule.exports = { name: ${JSON.stringify(name)}, description: 'x', transports: ['direct'], ${body} };\n`,
    );
  }
  return d;
}

/** Closes the fds rows leaked in this process (the scenarios here leak on purpose). */
function closeLeaks(rows: readonly ResultRow[]): void {
  for (const l of rows.flatMap((r) => r.leaks)) {
    if (l.pid !== process.pid) continue;
    try {
      // The row's tmpdir is gone by now: its files read as deleted.
      const now = readlinkSync(`/proc/self/fd/${l.fd}`);
      if (now === l.target || now === `${l.target} (deleted)`) closeSync(l.fd);
    } catch {
      // closed already
    }
  }
}

async function run(scenariosDir: string, options: Partial<RunnerOptions> = {}): Promise<ResultsFile> {
  let results: ResultsFile | undefined;
  try {
    ({ results } = await runScenarios({ bench: false, repeat: 1, seed: 1, settleMs: 50, timeoutMs: 20_000, scenariosDir, transports: ['direct'], isolation: 'none', ...options }));
    return results;
  } finally {
    if (results) closeLeaks(results.results);
  }
}

const byName = (rs: ResultsFile, name: string, iteration = 1): ResultRow => {
  const r = rs.results.find((x) => x.scenario === name && (x.iteration ?? 1) === iteration);
  if (!r) throw new Error(`no row ${name}`);
  return r;
};

const mine = (leaks: readonly Leak[]): Array<Pick<Leak, 'role' | 'target'>> => leaks.map(({ role, target }) => ({ role, target }));

describe('verdicts', () => {
  // Each test runs the scenarios it looks at (a test's own run: what a
  // mutation tool's per-test coverage attributes to it is what it checks).
  const ownFile = (): string => join(dir, 'harness-owned');
  const fixed = (): string => join(dir, 'fixed-target');
  const open = (file: string): string => `fs.openSync(path.join(ctx.tmpdir, ${JSON.stringify(file)}), 'w');`;
  const all = (): Record<string, string> => ({
    'passes': `async run(ctx) {
      ctx.count('things', 2); ctx.count('things'); ctx.count('other', 0);
      ctx.peak('depth', 3); ctx.peak('depth', 1); ctx.peak('low', -4);
      ctx.note('\\u001b[31mred\\u001b[39m note');
      for (const bad of [NaN, Infinity]) {
        let thrown;
        try { ctx.count('things', bad); } catch (e) { thrown = e; }
        if (!(thrown instanceof RangeError)) throw new Error('count took ' + bad);
        thrown = undefined;
        try { ctx.peak('depth', bad); } catch (e) { thrown = e; }
        if (!(thrown instanceof RangeError)) throw new Error('peak took ' + bad);
      }
    }`,
    'passes-but-leaks': `async run(ctx) { ${open('undeclared')} }`,
    'passes-but-throws': `async run() { const e = new Error('\\u001b[31mbroken\\u001b[39m'); e.code = 'ERR_BROKEN'; throw e; }`,
    'throws-a-string': `async run() { throw 'just a string'; }`,
    'throws-code-in-message': `async run() { const e = new Error('ERR_SAID failed'); e.code = 'ERR_SAID'; throw e; }`,
    'throws-before-await': `run() { throw new TypeError('at once'); }`,
    'leaks-declared': `expect: 'leak', failure: { leaks: [{ target: /\\/declared$/, role: 'client' }] },
      async run(ctx) { ${open('declared')} }`,
    'leaks-declared-string': `expect: 'leak', failure: { leaks: [{ target: 'nowhere' }, { target: ${JSON.stringify(fixed())} }] },
      async run() { fs.openSync(${JSON.stringify(fixed())}, 'w'); }`,
    'leaks-declared-string-prefix': `expect: 'leak', failure: { leaks: [{ target: ${JSON.stringify(fixed().slice(0, -1))} }] },
      async run() { fs.openSync(${JSON.stringify(fixed())}, 'w'); }`,
    'expects-the-unknown': `expect: 'maybe', async run() {}`,
    'leaks-more-than-declared': `expect: 'leak', failure: { leaks: [{ target: /\\/declared$/ }] },
      async run(ctx) { ${open('declared')} ${open('other')} }`,
    'leaks-wrong-role': `expect: 'leak', failure: { leaks: [{ target: /\\/declared$/, role: 'child' }] },
      async run(ctx) { ${open('declared')} }`,
    'leaks-nothing': `expect: 'leak', failure: { leaks: [{ target: /\\/declared$/ }] }, async run() {}`,
    'leaks-then-throws': `expect: 'leak', failure: { leaks: [{ target: /\\/declared$/ }] },
      async run(ctx) { ${open('declared')} throw new Error('after the leak'); }`,
    'fails-as-declared': `expect: 'fail', failure: { error: { name: 'TypeError', code: 'ERR_DECLARED', check: 'the-check' } },
      async run() { const e = new TypeError('declared'); e.code = 'ERR_DECLARED'; e.check = 'the-check'; throw e; }`,
    'fails-another-code': `expect: 'fail', failure: { error: { name: 'TypeError', code: 'ERR_DECLARED' } },
      async run() { const e = new TypeError('declared'); e.code = 'ERR_OTHER'; throw e; }`,
    'fails-another-name': `expect: 'fail', failure: { error: { name: 'TypeError', code: 'ERR_DECLARED' } },
      async run() { const e = new RangeError('declared'); e.code = 'ERR_DECLARED'; throw e; }`,
    'fails-another-check': `expect: 'fail', failure: { error: { check: 'the-check' } },
      async run() { const e = new Error('declared'); e.check = 'another-check'; throw e; }`,
    'fails-not-an-object': `expect: 'fail', failure: { error: { name: 'Error' } }, async run() { throw 'Error'; }`,
    'fails-with-null': `expect: 'fail', failure: { error: { name: 'Error' } }, async run() { throw null; }`,
    'fails-with-a-function': `expect: 'fail', failure: { error: { name: 'TypeError' } }, async run() { throw function TypeError() {}; }`,
    'fails-with-a-throwing-getter': `expect: 'fail', failure: { error: { name: 'TypeError' } },
      async run() { throw { get name() { throw new Error('no name for you'); } }; }`,
    'fails-as-declared-by-name': `expect: 'fail', failure: { error: { name: 'TypeError' } },
      async run() { const e = new TypeError('declared'); e.code = 'ERR_ANY'; e.check = 'any-check'; throw e; }`,
    'fails-another-way-and-leaks': `expect: 'fail', failure: { error: { code: 'ERR_DECLARED' } },
      async run(ctx) { ${open('leaked-too')} throw new Error('another'); }`,
    'leaks-nothing-of-two': `expect: 'leak', failure: { leaks: [{ target: /\\/one$/ }, { target: '/two', role: 'child' }] }, async run() {}`,
    'leaks-nothing-and-throws': `expect: 'leak', failure: { leaks: [{ target: /\\/declared$/ }] }, async run() { throw new Error('early'); }`,
    'passes-but-throws-and-leaks': `async run(ctx) { ${open('and-leaks')} throw new Error('thrown'); }`,
    'fails-and-leaks': `expect: 'fail', failure: { error: { code: 'ERR_DECLARED' } },
      async run(ctx) { ${open('also-leaked')} const e = new Error('declared'); e.code = 'ERR_DECLARED'; throw e; }`,
    'fails-by-completing': `expect: 'fail', failure: { error: { code: 'ERR_DECLARED' } }, async run() {}`,
    'skips': `async run(ctx) { ctx.skip('the kernel lacks it'); }`,
    'skips-after-leaking': `async run(ctx) { ${open('before-skip')} ctx.skip('too late'); }`,
    'closes-the-harness-fd': `async run() {
      for (const fd of fs.readdirSync('/proc/self/fd')) {
        let target; try { target = fs.readlinkSync('/proc/self/fd/' + fd); } catch { continue; }
        if (target === ${JSON.stringify(ownFile())}) fs.closeSync(Number(fd));
      }
    }`,
    'closes-the-harness-fd-and-rejects-undefined': `async run() {
      for (const fd of fs.readdirSync('/proc/self/fd')) {
        let target; try { target = fs.readlinkSync('/proc/self/fd/' + fd); } catch { continue; }
        if (target === ${JSON.stringify(ownFile())}) fs.closeSync(Number(fd));
      }
      return Promise.reject();
    }`,
    'connects-and-leaves-open': `async run(ctx) {
      const conn = await ctx.connect(require(${JSON.stringify(distPath('src/commands/probe-command.js'))}).PROBE_COMMAND);
      const where = await conn.call('where');
      if (where.pid !== process.pid) throw new Error('not direct');
    }`,
  });

  /** The rows of a run of the named scenarios above. */
  async function rowsOf(...names: string[]): Promise<ResultsFile> {
    const sources = all();
    return run(scenarios(Object.fromEntries(names.map((n) => [n, sources[n] as string]))));
  }

  test('a clean scenario passes, with its counters, marks and notes (without colour); bad numbers are RangeErrors', async () => {
    const rs = await rowsOf('passes');
    const r = byName(rs, 'passes');
    expect(r).toMatchObject({ status: 'pass', leaks: [], expect: 'pass', iteration: 1, metrics: { things: 3, other: 0 }, peaks: { depth: 3, low: -4 } });
    expect(r.error).toBeUndefined();
    expect(r.closed).toBeUndefined();
    expect(r.notes).toEqual(['red note']);
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
  });

  test("an undeclared leak, or a throw, fails a 'pass' scenario; the error keeps its code, loses its colour", async () => {
    const rs = await rowsOf('passes-but-leaks', 'passes-but-throws', 'throws-a-string', 'throws-code-in-message', 'throws-before-await', 'passes-but-throws-and-leaks');
    expect(byName(rs, 'passes-but-throws-and-leaks').error).toMatch(/^Error: thrown\nundeclared leak of 1 fd\(s\): .*\/and-leaks$/);
    const leaked = byName(rs, 'passes-but-leaks');
    expect(leaked.status).toBe('fail');
    expect(mine(leaked.leaks)).toEqual([{ role: 'client', target: expect.stringMatching(/\/undeclared$/) }]);
    expect(leaked.error).toMatch(/undeclared leak of 1 fd\(s\): pid \d+ \(client\): fd \d+ -> .*\/undeclared$/);
    const threw = byName(rs, 'passes-but-throws');
    expect(threw).toMatchObject({ status: 'fail', error: 'Error [ERR_BROKEN]: broken', leaks: [] });
    expect(byName(rs, 'throws-a-string')).toMatchObject({ status: 'fail', error: 'just a string' });
    // A code the message already says is not repeated.
    expect(byName(rs, 'throws-code-in-message')).toMatchObject({ status: 'fail', error: 'Error: ERR_SAID failed' });
    // A run() that throws before its first await is the row's failure, not the harness's.
    expect(byName(rs, 'throws-before-await')).toMatchObject({ status: 'fail', error: 'TypeError: at once' });
  });

  test("'leak': only the declared leak, from a run() that completes, is a caught expected failure", async () => {
    const rs = await rowsOf(
      'leaks-declared',
      'leaks-declared-string',
      'leaks-declared-string-prefix',
      'leaks-more-than-declared',
      'leaks-wrong-role',
      'leaks-nothing',
      'leaks-then-throws',
      'leaks-nothing-of-two',
      'leaks-nothing-and-throws',
    );
    const caught = byName(rs, 'leaks-declared');
    expect(caught.status).toBe('expected-fail');
    expect(mine(caught.leaks)).toEqual([{ role: 'client', target: expect.stringMatching(/\/declared$/) }]);
    expect(caught.error).toMatch(/^leak caught: pid \d+ \(client\): fd \d+ -> .*\/declared$/);
    // A string target must be equal to the leak's: a prefix of it is not.
    expect(byName(rs, 'leaks-declared-string')).toMatchObject({ status: 'expected-fail', leaks: [{ target: join(dir, 'fixed-target') }] });
    expect(byName(rs, 'leaks-declared-string-prefix')).toMatchObject({ status: 'fail', error: expect.stringMatching(/^undeclared leak of 1 fd\(s\): .*fixed-target$/) });
    const more = byName(rs, 'leaks-more-than-declared');
    expect(more.status).toBe('fail');
    expect(more.leaks).toHaveLength(2);
    expect(more.error).toMatch(/^undeclared leak of 1 fd\(s\): .*\/other$/);
    expect(byName(rs, 'leaks-wrong-role')).toMatchObject({ status: 'fail', error: expect.stringMatching(/^undeclared leak of 1 fd\(s\): .*\/declared$/) });
    expect(byName(rs, 'leaks-nothing')).toMatchObject({
      status: 'fail',
      error: "expected a leak of target /\\/declared$/ ('leak' scenario), but the oracle saw none",
    });
    expect(byName(rs, 'leaks-nothing-of-two').error).toBe(
      "expected a leak of target /\\/one$/ or target /two, role child ('leak' scenario), but the oracle saw none",
    );
    expect(byName(rs, 'leaks-nothing-and-throws').error).toBe(
      "a 'leak' scenario must complete, but it threw: Error: early\nexpected a leak of target /\\/declared$/ ('leak' scenario), but the oracle saw none",
    );
    const threw = byName(rs, 'leaks-then-throws');
    expect(threw.status).toBe('fail');
    expect(threw.error).toBe("a 'leak' scenario must complete, but it threw: Error: after the leak");
  });

  test("'fail': only the declared error (every field given) is a caught expected failure", async () => {
    const rs = await rowsOf(
      'fails-as-declared',
      'fails-another-code',
      'fails-another-name',
      'fails-another-check',
      'fails-not-an-object',
      'fails-with-null',
      'fails-with-a-function',
      'fails-with-a-throwing-getter',
      'fails-as-declared-by-name',
      'fails-another-way-and-leaks',
      'fails-and-leaks',
      'fails-by-completing',
    );
    expect(byName(rs, 'fails-as-declared')).toMatchObject({ status: 'expected-fail', error: 'failure caught: TypeError [ERR_DECLARED]: declared', leaks: [] });
    for (const name of ['fails-another-code', 'fails-another-name', 'fails-another-check', 'fails-not-an-object', 'fails-with-null', 'fails-with-a-function', 'fails-with-a-throwing-getter']) {
      const r = byName(rs, name);
      expect([name, r.status]).toEqual([name, 'fail']);
      expect(r.error).toMatch(/^expected run\(\) to throw .*, but it threw another error: /);
    }
    expect(byName(rs, 'fails-another-code').error).toBe(
      'expected run() to throw name TypeError, code ERR_DECLARED, but it threw another error: TypeError [ERR_OTHER]: declared',
    );
    // Fields not declared are not compared: any code or check goes.
    expect(byName(rs, 'fails-as-declared-by-name')).toMatchObject({ status: 'expected-fail', error: 'failure caught: TypeError [ERR_ANY]: declared' });
    // Every problem, one per line.
    expect(byName(rs, 'fails-another-way-and-leaks').error).toMatch(
      /^expected run\(\) to throw code ERR_DECLARED, but it threw another error: Error: another\nundeclared leak of 1 fd\(s\): .*\/leaked-too$/,
    );
    const leaked = byName(rs, 'fails-and-leaks');
    expect(leaked.status).toBe('fail');
    expect(leaked.error).toMatch(/^undeclared leak of 1 fd\(s\): .*\/also-leaked$/);
    expect(byName(rs, 'fails-by-completing')).toMatchObject({
      status: 'fail',
      error: "expected run() to throw code ERR_DECLARED ('fail' scenario), but it completed",
    });
  });

  test('ctx.skip: a skip with its reason; a skip after a leak fails', async () => {
    const rs = await rowsOf('skips', 'skips-after-leaking');
    expect(byName(rs, 'skips')).toMatchObject({ status: 'skip', error: 'the kernel lacks it', leaks: [] });
    const late = byName(rs, 'skips-after-leaking');
    expect(late.status).toBe('fail');
    expect(late.error).toMatch(/^skipped: too late\nleaked 1 fd\(s\) before skipping: .*\/before-skip$/);
  });

  test('closing an fd that was open before the row fails it, with the fd in `closed`', async () => {
    const own = openSync(ownFile(), 'w');
    let rs: ResultsFile;
    try {
      rs = await rowsOf('closes-the-harness-fd');
    } finally {
      try {
        if (readlinkSync(`/proc/self/fd/${own}`) === ownFile()) closeSync(own);
      } catch {
        // closed by the scenario, as it should
      }
    }
    const r = byName(rs, 'closes-the-harness-fd');
    expect(r.status).toBe('fail');
    expect(r.closed).toEqual([{ pid: process.pid, role: 'client', fd: own, target: ownFile() }]);
    expect(r.error).toBe(`closed 1 fd(s) that were open before it: pid ${process.pid} (client): fd ${own} -> ${ownFile()}`);
  });

  test('a row that fails on its own (rejected with undefined) and closed an fd that was open before: both problems, one per line', async () => {
    const own = openSync(ownFile(), 'w');
    let rs: ResultsFile;
    try {
      rs = await rowsOf('closes-the-harness-fd-and-rejects-undefined');
    } finally {
      try {
        if (readlinkSync(`/proc/self/fd/${own}`) === ownFile()) closeSync(own);
      } catch {
        // closed by the scenario, as it should
      }
    }
    const r = byName(rs, 'closes-the-harness-fd-and-rejects-undefined');
    expect(r.status).toBe('fail');
    expect(r.closed).toEqual([{ pid: process.pid, role: 'client', fd: own, target: ownFile() }]);
    expect(r.error?.split('\n')).toEqual([
      'run() rejected with undefined (a throw or reject() with no error): it did not complete',
      `closed 1 fd(s) that were open before it: pid ${process.pid} (client): fd ${own} -> ${ownFile()}`,
    ]);
  });

  test('an expectation the runner does not know fails the row', async () => {
    const rs = await rowsOf('expects-the-unknown');
    expect(byName(rs, 'expects-the-unknown')).toMatchObject({ status: 'fail', error: 'unknown expectation maybe' });
  });

  test('a connection the scenario left open is closed by the harness: no leak, no note', async () => {
    const rs = await rowsOf('connects-and-leaves-open');
    expect(byName(rs, 'connects-and-leaves-open')).toMatchObject({ status: 'pass', leaks: [] });
    expect(byName(rs, 'connects-and-leaves-open').notes).toBeUndefined();
  });

  test('the totals of the run: counters summed, standard ones present, leaks and failed rows counted', async () => {
    const rs = await rowsOf('passes', 'passes-but-leaks', 'leaks-declared', 'skips');
    expect(rs.totals?.['things']).toBe(3);
    for (const c of STANDARD_COUNTERS) expect(rs.totals?.[c]).toBe(0);
    // One leak declared, one not; one row failed (the undeclared leak).
    expect(rs.totals).toMatchObject({ leakedFds: 2, undeclaredLeaks: 1, failedRows: 1 });
    expect(rs.options).toMatchObject({ transports: ['direct'], bench: false, repeat: 1, seed: 1, settleMs: 50, timeoutMs: 20_000, profile: 'default' });
    expect(rs.options.trackFds).toBeUndefined();
    expect(rs.plan?.rows).toEqual(rs.results.map((r) => `${r.scenario}/direct`).sort());
  });
});

describe('time limits and stops', () => {
  test("a run() that never ends fails its row with the limit named, even a 'fail' scenario's; the other rows run", async () => {
    const d = scenarios({
      'hangs': `async run(ctx) { await new Promise(() => undefined); }`,
      'hangs-expecting-fail': `expect: 'fail', failure: { error: { name: 'Error' } }, async run() { await new Promise(() => undefined); }`,
      'after': `async run(ctx) { ctx.count('ran'); }`,
    });
    const rs = await run(d, { timeoutMs: 300 });
    expect(byName(rs, 'hangs')).toMatchObject({ status: 'fail', error: 'hangs on direct timed out after 300 ms' });
    // A timeout is not the error run() was declared to end with.
    expect(byName(rs, 'hangs-expecting-fail')).toMatchObject({ status: 'fail', error: 'hangs-expecting-fail on direct timed out after 300 ms' });
    expect(byName(rs, 'after')).toMatchObject({ status: 'pass', metrics: { ran: 1 } });
  });

  test('a connection made after the row timed out is refused and closed', async () => {
    const probe = JSON.stringify(distPath('src/commands/probe-command.js'));
    const d = scenarios({
      'connects-late': `async run(ctx) {
        await new Promise((r) => setTimeout(r, 200));
        let err;
        try { await ctx.connect(require(${probe}).PROBE_COMMAND); } catch (e) { err = e; }
        ctx.note('late: ' + (err && err.message));
      }`,
    });
    // The row ends at 50 ms; the scenario goes on until it unwinds (500 ms given), and its late connect is refused.
    const rs = await run(d, { timeoutMs: 50 });
    const r = byName(rs, 'connects-late');
    expect(r.status).toBe('fail');
    expect(r.error).toBe('connects-late on direct timed out after 50 ms');
    expect(r.notes).toEqual(['late: ctx.connect: the row connects-late/direct has ended (timed out)']);
  });

  test('a stop ends the row that runs, starts no other, and the run rejects with the reason', async () => {
    const d = scenarios({ 'a-hangs': `async run() { await new Promise(() => undefined); }`, 'b-hangs': `async run() { await new Promise(() => undefined); }` });
    const ac = new AbortController();
    const started: string[] = [];
    const ended: string[] = [];
    await expect(
      runScenarios({
        bench: false, repeat: 1, seed: 1, settleMs: 50, timeoutMs: 60_000, scenariosDir: d, transports: ['direct'], signal: ac.signal, isolation: 'none',
        onRowStart: (row) => {
          started.push(row.scenario.name);
          ac.abort(new Error('enough'));
        },
        onRowEnd: (row) => ended.push(row.scenario),
      }),
    ).rejects.toThrow('enough');
    expect(started).toHaveLength(1);
    expect(ended).toEqual([]);
  });

  /**
   * Runs `body` with setTimeout and clearTimeout watched: returns the
   * timers of `ms` (the rows' limits: no other timer of the run is that
   * long) that were never cleared, each cleared here afterwards.
   */
  async function limitsLeft(ms: number, body: () => Promise<unknown>): Promise<{ limits: number; left: number }> {
    const limits: NodeJS.Timeout[] = [];
    const cleared = new Set<unknown>();
    const realSet = setTimeout;
    const realClear = clearTimeout;
    jest.spyOn(global, 'setTimeout').mockImplementation(((fn: () => void, after?: number) => {
      const t = realSet(fn, after);
      if (after === ms) limits.push(t);
      return t;
    }) as typeof setTimeout);
    jest.spyOn(global, 'clearTimeout').mockImplementation(((t?: NodeJS.Timeout) => {
      cleared.add(t);
      realClear(t);
    }) as typeof clearTimeout);
    try {
      await body();
    } finally {
      jest.restoreAllMocks();
      for (const t of limits) realClear(t);
    }
    return { limits: limits.length, left: limits.filter((t) => !cleared.has(t)).length };
  }

  test("a row's time limit is cleared when the row ends: a run leaves no timer behind to hold the process open", async () => {
    const d = scenarios({ 'quick': `async run() {}`, 'quicker': `async run() {}` });
    expect(await limitsLeft(600_000, () => run(d, { timeoutMs: 600_000 }))).toEqual({ limits: 2, left: 0 });
  });

  test("a row's time limit is cleared when the run is stopped while the row's scenario never settles: a stopped run leaves no timer behind to hold the process open", async () => {
    const d = scenarios({ 'hangs': `async run() { await new Promise(() => undefined); }` });
    const ac = new AbortController();
    const stopped = limitsLeft(600_000, () =>
      expect(
        runScenarios({
          bench: false, repeat: 1, seed: 1, settleMs: 50, timeoutMs: 600_000, scenariosDir: d, transports: ['direct'], signal: ac.signal, isolation: 'none',
          onRowStart: () => ac.abort(new Error('enough')),
        }),
      ).rejects.toThrow('enough'),
    );
    expect(await stopped).toEqual({ limits: 1, left: 0 });
  });

  test('a run stopped before it starts runs nothing', async () => {
    const d = scenarios({ 'never': `async run(ctx) { throw new Error('ran'); }` });
    const ac = new AbortController();
    ac.abort(new Error('stopped already'));
    const started: string[] = [];
    await expect(
      runScenarios({ bench: false, repeat: 1, seed: 1, scenariosDir: d, transports: ['direct'], signal: ac.signal, isolation: 'none', onRowStart: (row) => started.push(row.scenario.name) }),
    ).rejects.toThrow('stopped already');
    expect(started).toEqual([]);
  });
});

describe('rows, order and inputs', () => {
  test('--repeat: every pass of every row, pass by pass; a pass draws other inputs, the same seed the same ones', async () => {
    const d = scenarios({
      'draws-a': `async run(ctx) { ctx.peak('draw', ctx.rng.int(0, 1_000_000_000)); }`,
      'draws-b': `async run(ctx) { ctx.peak('draw', ctx.rng.int(0, 1_000_000_000)); }`,
    });
    const seen: Array<[string, number, number]> = [];
    const a = await run(d, { repeat: 2, seed: 7, onRowStart: (row, i, total) => seen.push([`${row.scenario.name}/${row.iteration}`, i, total]) });
    expect(a.results.map((r) => r.iteration)).toEqual([1, 1, 2, 2]);
    expect(seen.map(([, i, total]) => [i, total])).toEqual([[0, 4], [1, 4], [2, 4], [3, 4]]);
    expect(seen.map(([k]) => k)).toEqual(a.results.map((r) => `${r.scenario}/${r.iteration}`));
    const draw = (rs: ResultsFile, name: string, k: number): number | undefined => byName(rs, name, k).peaks?.['draw'];
    expect(draw(a, 'draws-a', 1)).not.toBe(draw(a, 'draws-a', 2));
    expect(draw(a, 'draws-a', 1)).not.toBe(draw(a, 'draws-b', 1));
    const again = await run(d, { repeat: 2, seed: 7 });
    expect(again.results.map((r) => [r.scenario, r.iteration, r.peaks])).toEqual(a.results.map((r) => [r.scenario, r.iteration, r.peaks]));
    const other = await run(d, { repeat: 1, seed: 8 });
    expect(draw(other, 'draws-a', 1)).not.toBe(draw(a, 'draws-a', 1));
    // The largest mark over the rows.
    expect(a.totals?.['draw']).toBe(Math.max(...a.results.map((r) => r.peaks?.['draw'] ?? 0)));
  });

  test('a --scenario filter and a shard run only theirs; the plan names the whole unsharded run', async () => {
    const d = scenarios({ 'one': `async run() {}`, 'two': `async run() {}`, 'three': `async run() {}` });
    const only = await runScenarios({ bench: false, repeat: 1, seed: 1, settleMs: 50, scenariosDir: d, transports: ['direct'], isolation: 'none', scenario: 't*' });
    expect(only.matched).toBe(2);
    expect(only.results.results.map((r) => r.scenario).sort()).toEqual(['three', 'two']);
    expect(only.results.options.scenario).toBe('t*');
    const shards = await Promise.all([1, 2].map(async (index) => (await runScenarios({ bench: false, repeat: 1, seed: 1, settleMs: 50, scenariosDir: d, transports: ['direct'], isolation: 'none', shard: { index, count: 2 } })).results));
    expect(shards.flatMap((s) => s.results.map((r) => r.scenario)).sort()).toEqual(['one', 'three', 'two']);
    for (const s of shards) {
      expect(s.plan?.rows).toEqual(['one/direct', 'three/direct', 'two/direct']);
      expect(s.options.shard?.count).toBe(2);
    }
  });

  test('--track-fds in a process started without the recorders is an error before any row', async () => {
    const d = scenarios({ 'never': `async run(ctx) { throw new Error('ran'); }` });
    const saved = process.env['FDBRIDGE_FDTRACK_DIR'];
    delete process.env['FDBRIDGE_FDTRACK_DIR'];
    try {
      await expect(run(d, { trackFds: true })).rejects.toThrow('--track-fds: this process was not started with the fd recorders (FDBRIDGE_FDTRACK_DIR is not set)');
    } finally {
      if (saved !== undefined) process.env['FDBRIDGE_FDTRACK_DIR'] = saved;
    }
  });

  test('--track-fds: each leak names where it was opened, or that no recorder saw it', async () => {
    const track = mkdtempSync(join(dir, 'track-'));
    const d = scenarios({
      'leaks-recorded': `expect: 'leak', failure: { leaks: [{ target: /\\/recorded$/ }, { target: /\\/unrecorded$/ }] },
        async run(ctx) {
          const a = fs.openSync(path.join(ctx.tmpdir, 'recorded'), 'w');
          fs.openSync(path.join(ctx.tmpdir, 'unrecorded'), 'w');
          fs.writeFileSync(${JSON.stringify(join(track, `js-${process.pid}.log`))}, JSON.stringify({ fd: a, target: fs.readlinkSync('/proc/self/fd/' + a), call: 'fs.openSync', stack: ['here (x.js:1:1)'] }) + '\\n');
        }`,
    });
    const saved = process.env['FDBRIDGE_FDTRACK_DIR'];
    process.env['FDBRIDGE_FDTRACK_DIR'] = track;
    try {
      const rs = await run(d, { trackFds: true });
      const r = byName(rs, 'leaks-recorded');
      expect(r.status).toBe('expected-fail');
      expect(rs.options.trackFds).toBe(true);
      const origins = Object.fromEntries(r.leaks.map((l) => [l.target.replace(/.*\//, ''), l.openedAt]));
      expect(origins).toEqual({ recorded: { call: 'fs.openSync', js: ['here (x.js:1:1)'], unconfirmed: true }, unrecorded: { call: 'unseen' } });
    } finally {
      if (saved === undefined) delete process.env['FDBRIDGE_FDTRACK_DIR'];
      else process.env['FDBRIDGE_FDTRACK_DIR'] = saved;
    }
  });
});

describe('discoverScenarios', () => {
  const write = (d: string, file: string, text: string): void => writeFileSync(join(d, file), text);

  test('every scenario file, sorted by file name, default export or module.exports; declaration files and others left out', () => {
    const d = mkdtempSync(join(dir, 'found-'));
    write(d, 'b.scenario.js', "module.exports = { name: 'b', description: 'd', run: async () => {} };");
    write(d, 'a.scenario.js', "exports.default = { name: 'a', description: 'd', run: async () => {} };");
    write(d, 'c.scenario.ts', "export default { name: 'c', description: 'd', run: async (): Promise<void> => {} };");
    write(d, 'c.scenario.d.ts', 'this is not JavaScript');
    write(d, 'helper.js', 'this is not JavaScript either');
    write(d, 'x.scenario.json', '{}');
    const found = discoverScenarios(d);
    expect(found.map((l) => [l.scenario.name, l.file])).toEqual([['a', join(d, 'a.scenario.js')], ['b', join(d, 'b.scenario.js')], ['c', join(d, 'c.scenario.ts')]]);
  });

  test('no directory, an empty one, a file instead: clear errors', () => {
    expect(() => discoverScenarios(join(dir, 'nowhere'))).toThrow(`no scenarios: ${join(dir, 'nowhere')} does not exist`);
    const empty = mkdtempSync(join(dir, 'empty-'));
    write(empty, 'notes.scenario.d.ts', '');
    expect(() => discoverScenarios(empty)).toThrow(`no scenarios: ${empty} has no *.scenario.ts or *.scenario.js file`);
    write(empty, 'file', '');
    expect(() => discoverScenarios(join(empty, 'file'))).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
  });

  test('not a scenario, a name used twice, an unknown transport: errors naming the file', () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ 'x.scenario.js': "module.exports = { name: 'x', description: 'd' };" }, /x\.scenario\.js: the default export is not a Scenario/],
      [{ 'x.scenario.js': "module.exports = { name: 7, description: 'd', run() {} };" }, /x\.scenario\.js: the default export is not a Scenario/],
      [{ 'x.scenario.js': 'module.exports = null;' }, /x\.scenario\.js: the default export is not a Scenario/],
      [{ 'x.scenario.js': "module.exports = { name: 'x', description: 'd', run: 'not a function' };" }, /x\.scenario\.js: the default export is not a Scenario/],
      [
        { 'a.scenario.js': "module.exports = { name: 'same', description: 'd', run() {} };", 'b.scenario.js': "module.exports = { name: 'same', description: 'd', run() {} };" },
        /^scenario name same is used by both .*\/a\.scenario\.js and .*\/b\.scenario\.js$/,
      ],
      [{ 'x.scenario.js': "module.exports = { name: 'x', description: 'd', transports: ['direct', 'carrier-pigeon'], run() {} };" }, /x\.scenario\.js: unknown transport carrier-pigeon; use direct, /],
      [{ 'x.scenario.js': "module.exports = { name: 'x', description: 'd', expect: 'fail', failure: { error: { name: 'E' } }, run() {} };" }, /^$/],
    ];
    for (const [files, error] of cases) {
      const d = mkdtempSync(join(dir, 'bad-'));
      for (const [f, text] of Object.entries(files)) write(d, f, text);
      if (error.source === '^$') expect(discoverScenarios(d)).toHaveLength(1);
      else expect(() => discoverScenarios(d)).toThrow(error);
    }
  });
});

describe('computeTotals', () => {
  const row = (over: Partial<ResultRow>): ResultRow => ({ scenario: 's', transport: 'direct', status: 'pass', leaks: [], ...over });
  const leak = { pid: 1, role: 'client', fd: 3, target: '/x' };

  test('undeclared leaks leave out those of leak scenarios; the peak memory is the largest given', () => {
    const totals = computeTotals(
      [
        row({ expect: 'leak', status: 'expected-fail', leaks: [leak, leak], peaks: { clientPeakRssBytes: 5000, helperPeakRssBytes: 9000 } }),
        row({ status: 'fail', leaks: [leak] }),
        row({ expect: 'pass', metrics: { faultsInjected: 2 } }),
      ],
      7000,
      4000,
    );
    expect(totals).toMatchObject({ leakedFds: 3, undeclaredLeaks: 1, failedRows: 1, faultsInjected: 2, clientPeakRssBytes: 5000, helperPeakRssBytes: 9000 });
    expect(computeTotals([], 100, 200)).toMatchObject({ clientPeakRssBytes: 200, helperPeakRssBytes: 100, leakedFds: 0, undeclaredLeaks: 0, failedRows: 0 });
    // No helper daemon: no helper figure at all.
    expect(computeTotals([], undefined, 200)['helperPeakRssBytes']).toBeUndefined();
    // Without a figure given, this process's own peak (which only grows).
    const before = process.resourceUsage().maxRSS * 1024;
    const own = computeTotals([], undefined)['clientPeakRssBytes'];
    expect(own).toBeGreaterThanOrEqual(before);
    expect(own).toBeLessThanOrEqual(process.resourceUsage().maxRSS * 1024);
  });
});
