/**
 * report/index.html: every results row in the matrix exactly once, every
 * string from results escaped, nothing external, a chart per transport with
 * latency; and the page opened in headless Chromium (Debian's `chromium`)
 * without console errors, when it is installed.
 *
 * Imports nothing that loads tinybench or the native addon: the report is a
 * pure function of a ResultsFile.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { esc, renderHtmlReport, writeHtmlReport } from '../../harness/report-html';
import type { ResultRow, ResultsFile } from '../../harness/types';
import {
  HOSTILE_ERROR,
  HOSTILE_NOTE,
  HOSTILE_SCENARIO,
  HOSTILE_TARGET,
  HOSTILE_TRANSPORT,
  QUOTE_SCENARIO,
  sampleResults,
} from './sample-results';

// ---------------------------------------------------------------------------
// a strict little tag scanner: the page is generated, so it can be held to a
// grammar much narrower than HTML's

interface Tag {
  name: string;
  close: boolean;
  attrs: Map<string, string>;
  /** Offset in the page. */
  at: number;
}

const VOID = new Set(['meta', 'link']);
const TAGS = new Set(
  'html head meta link title style body header h1 h2 h3 nav a main section p b div span table thead tbody tr th td ul ol li pre code svg defs pattern rect line g text tspan'.split(' '),
);
const ATTRS = new Set(
  'lang charset http-equiv content name rel href id class title style scope role aria-label viewBox width height x y x1 y1 x2 y2 fill stroke stroke-width text-anchor patternUnits patternTransform'.split(' '),
);

function unescapeHtml(s: string): string {
  return s.replace(/&(lt|gt|quot|#39|amp);/g, (_, e: string) => ({ lt: '<', gt: '>', quot: '"', '#39': "'", amp: '&' })[e] as string);
}

/** The visible form of a string from results: C0 controls are shown as \xNN. */
function shown(s: string): string {
  return s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * Every '<' in the page must open a known tag (text never holds a raw '<'),
 * every attribute is known and double-quoted, and tags nest properly.
 */
function scanTags(html: string): Tag[] {
  const tags: Tag[] = [];
  const stack: string[] = [];
  let i = 0;
  for (;;) {
    i = html.indexOf('<', i);
    if (i === -1) break;
    if (html.startsWith('<!DOCTYPE html>', i)) {
      i += '<!DOCTYPE html>'.length;
      continue;
    }
    const m = /^<(\/?)([a-zA-Z][a-zA-Z0-9]*)((?:\s+[a-zA-Z][a-zA-Z0-9:-]*(?:="[^"<>]*")?)*)\s*>/.exec(html.slice(i, i + 20000));
    if (!m) throw new Error(`a '<' that opens no well-formed tag at ${i}: ${JSON.stringify(html.slice(i, i + 80))}`);
    const [, slash, name, rawAttrs] = m as unknown as [string, string, string, string];
    if (!TAGS.has(name)) throw new Error(`unexpected tag <${slash}${name}> at ${i}`);
    const attrs = new Map<string, string>();
    for (const a of rawAttrs.matchAll(/\s+([a-zA-Z][a-zA-Z0-9:-]*)(?:="([^"]*)")?/g)) {
      const attr = a[1] as string;
      if (!ATTRS.has(attr) && !attr.startsWith('data-') && attr !== 'hidden') {
        throw new Error(`unexpected attribute ${attr} on <${name}> at ${i}`);
      }
      if (attrs.has(attr)) throw new Error(`attribute ${attr} twice on <${name}> at ${i}`);
      attrs.set(attr, unescapeHtml(a[2] ?? ''));
    }
    const close = slash === '/';
    tags.push({ name, close, attrs, at: i });
    if (close) {
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> at ${i} closes <${open}>`);
    } else if (!VOID.has(name)) {
      stack.push(name);
    }
    i += m[0].length;
  }
  if (stack.length > 0) throw new Error(`unclosed: ${stack.join(' > ')}`);
  return tags;
}

function sectionRange(html: string, id: string): [number, number] {
  const start = html.indexOf(`<section id="${id}">`);
  const end = html.indexOf('</section>', start);
  expect(start).toBeGreaterThanOrEqual(0);
  return [start, end];
}

function count(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

// ---------------------------------------------------------------------------

describe('renderHtmlReport', () => {
  const results = sampleResults();
  const html = renderHtmlReport(results);
  let tags: Tag[] = [];
  beforeAll(() => {
    tags = scanTags(html);
  });

  it('is well formed: every tag known and balanced, no raw "<" in text', () => {
    expect(html.startsWith('<!DOCTYPE html>\n<html lang="en">')).toBe(true);
    expect(tags.filter((t) => t.name === 'body' && !t.close)).toHaveLength(1);
    // No raw '>' in text either (outside the one style block, where CSS may use it).
    const text = html.replace(/<style>[\s\S]*?<\/style>/, '').replace(/<[^<>]*>/g, '');
    expect(text).not.toMatch(/[<>]/);
  });

  it('puts every results row in the matrix exactly once, with its scenario, transport and status', () => {
    const marks = tags.filter((t) => t.attrs.has('data-row'));
    expect(marks).toHaveLength(results.results.length);
    expect(count(html, 'data-scenario="')).toBe(results.results.length);
    const [start, end] = sectionRange(html, 'matrix');
    const seen = new Set<number>();
    for (const mark of marks) {
      const i = Number(mark.attrs.get('data-row'));
      expect(seen.has(i)).toBe(false);
      seen.add(i);
      const row = results.results[i]!;
      expect(mark.attrs.get('data-scenario')).toBe(row.scenario);
      expect(mark.attrs.get('data-transport')).toBe(row.transport);
      expect(mark.attrs.get('data-status')).toBe(row.status);
      expect(mark.attrs.get('data-leaks')).toBe(String(row.leaks.length));
      expect(mark.at > start && mark.at < end).toBe(true);
    }
    expect([...seen].sort((a, b) => a - b)).toEqual(results.results.map((_, i) => i));
  });

  it('gives each cell a readable symbol and word, and a tooltip with the error and the leaked fds', () => {
    const i = results.results.findIndex((r) => r.scenario === HOSTILE_SCENARIO && r.transport === 'direct');
    const mark = tags.find((t) => t.attrs.get('data-row') === String(i))!;
    const title = mark.attrs.get('title')!;
    expect(title).toContain(shown(HOSTILE_ERROR));
    expect(title).toContain(`1001 client 23 -> ${shown(HOSTILE_TARGET)}`);
    expect(title).toContain('1002 child 5 -> pipe:[998877]');
    const after = html.slice(mark.at, html.indexOf('</a>', mark.at));
    expect(after).toContain('✗ FAIL');
    expect(after).toContain('⚠ 2');
    for (const [status, word] of [['pass', '✓ pass'], ['skip', '○ skip'], ['expected-fail', '◆ xfail']] as const) {
      const m = tags.find((t) => t.attrs.get('data-status') === status)!;
      expect(html.slice(m.at, m.at + 2000)).toContain(word);
    }
  });

  it('escapes every string from results: markup in names, errors, targets and notes renders as text', () => {
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<img/i);
    expect(html).not.toContain('<b>evil');
    expect(html).not.toContain('<i>odd');
    expect(count(html, '<style')).toBe(1);
    expect(html).toContain(esc(HOSTILE_SCENARIO));
    expect(html).toContain(`<pre>${esc(HOSTILE_ERROR)}</pre>`);
    expect(html).toContain(esc(HOSTILE_NOTE));
    expect(html).toContain(esc(QUOTE_SCENARIO));
    expect(html).toContain(`<th scope="col">${esc(HOSTILE_TRANSPORT)}</th>`);
    // The quote cannot break out of an attribute: no on* attribute exists (scanTags
    // would have thrown), and the NUL and BEL of the target show as \x00\x07.
    expect(tags.some((t) => [...t.attrs.keys()].some((a) => a.startsWith('on')))).toBe(false);
    expect(html).toContain('\\x00\\x07');
    expect(html).not.toMatch(/[\u0000\u0007]/);
  });

  it('refers to nothing outside the page', () => {
    expect(tags.some((t) => t.attrs.has('src'))).toBe(false);
    for (const t of tags) {
      const href = t.attrs.get('href');
      if (href !== undefined) expect(href === 'data:,' || href.startsWith('#')).toBe(true);
      for (const [name, value] of t.attrs) {
        if (name === 'title' || name.startsWith('data-')) continue; // text, never fetched
        expect(value).not.toMatch(/https?:|\/\//i);
        for (const u of value.matchAll(/url\(([^)]*)\)/g)) expect(u[1]).toMatch(/^#/);
      }
    }
    const style = /<style>([\s\S]*?)<\/style>/.exec(html)![1]!;
    expect(style).not.toMatch(/@import|url\(|https?:/i);
    expect(html).toContain(`content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"`);
    // 'http' appears only in the hostile strings, as text (and in the meta's http-equiv).
    for (const m of html.matchAll(/http(?!-equiv=)/g)) expect(html.slice(m.index!, m.index! + 22)).toBe('http://evil.example/x.');
  });

  it('draws every transport in one SVG chart on one axis, anchors labelled and behind the numbers, ratios saying which way is better', () => {
    const charts = tags.filter((t) => t.name === 'svg' && !t.close);
    expect(charts.map((c) => c.attrs.get('data-chart'))).toEqual(['all']);
    const chart = charts[0]!;
    const svg = html.slice(chart.at, html.indexOf('</svg>', chart.at));
    // One bar per benchmarked (scenario, transport): --repeat passes fold into one.
    const pairs = new Set(results.results.filter((r) => r.latency).map((r) => `${r.scenario}\0${r.transport}`));
    expect(count(svg, '<g class="scenario">')).toBe(pairs.size);
    expect(count(svg, '<g class="anchor">')).toBe(results.anchors.length);
    expect(count(svg, '<line class="ref"')).toBe(results.anchors.length);
    for (const a of results.anchors) expect(svg).toContain(esc(a.name));
    for (const t of new Set(results.results.filter((r) => r.latency).map((r) => r.transport))) expect(svg).toContain(`${esc(t)}</text>`);
    // The dashed anchor lines are drawn before every bar and number, so those lie over them.
    expect(svg.lastIndexOf('<line class="ref"')).toBeLessThan(svg.indexOf('<g class="anchor">'));
    expect(html).toMatch(/\.chart \.value,\.chart \.tick\{paint-order:stroke;stroke:#fff/);
    expect(html).toContain('<g class="scenario"><title>truncate-far-side on helper (FAIL): p50 380 µs');
    expect(html).toContain('median of 2 passes');

    expect(html).toContain(`No latency measured on ${esc(HOSTILE_TRANSPORT)}`);
    // The hostile row on direct: p50 30 µs against anchors of 180 µs and 9 µs.
    const row = html.slice(html.indexOf(`<tr><th scope="row">${esc(HOSTILE_SCENARIO)}</th><td><span class="mark fail">`));
    expect(row.slice(0, row.indexOf('</tr>'))).toMatch(/30\.0 µs<\/td>.*<td>0\.17×<\/td><td>3\.33×<\/td>$/);
    expect(html).toContain('÷ C SCM_RIGHTS ping-pong <span class="better">(lower is better)</span></th>');
    expect(html).toMatch(/p50 on <b>direct<\/b> is <b>[0-9.]+×<\/b> <b>node child\.send\(server\)<\/b>: faster than node child\.send\(server\) \(.*lower is better\)/);
    expect(html).toMatch(/p50 on <b>helper<\/b> is <b>[0-9.]+×<\/b> <b>C SCM_RIGHTS ping-pong<\/b>: slower than C SCM_RIGHTS ping-pong/);
  });

  it('strips ANSI colours from errors and notes; totals in units, with readable names; counts of one in the singular', () => {
    const coloured = sampleResults();
    const red = '\u001b[31m- expected\u001b[39m \u001b[32m+ actual\u001b[39m';
    coloured.results[0]!.status = 'expected-fail';
    coloured.results[0]!.error = `failure caught: AssertionError: ${red}`;
    coloured.results[0]!.notes = [`note ${red}`];
    coloured.results[0]!.leaks = [{ pid: 1, role: 'client', fd: 9, target: '/tmp/x' }];
    coloured.results = coloured.results.map((r, i) => (i === 0 ? r : { ...r, leaks: [], status: r.status === 'expected-fail' ? 'pass' : r.status }));
    coloured.totals = { clientPeakRssBytes: 204_382_208, helperPeakRssBytes: 3_000, settleAfterFaultMs: 12, faultsInjected: 7, leakedFds: 1 };
    const page = renderHtmlReport(coloured);
    scanTags(page);
    expect(page).not.toMatch(/\\x1b|\u001b/);
    expect(page).toContain(`<pre>${esc('failure caught: AssertionError: - expected + actual')}</pre>`);
    expect(page).toContain('<li>note - expected + actual</li>');
    expect(page).toContain('<tr><th scope="row">client peak RSS</th><td>195 MB</td></tr>');
    expect(page).toContain('<tr><th scope="row">helper peak RSS</th><td>2.9 KB</td></tr>');
    expect(page).toContain('<tr><th scope="row">settle after fault</th><td>12 ms</td></tr>');
    expect(page).toContain('<tr><th scope="row">faults injected</th><td>7</td></tr>');
    expect(page).toContain('<tr><th scope="row">leaked fds</th><td>1</td></tr>');
    expect(page).toContain('data-summary="declared-leaks">1</span><span class="k">◆ declared leak</span>');
    expect(page).toContain('data-summary="undeclared-leaks">0</span><span class="k">⚠ undeclared leaks</span>');
  });

  it('summarises counts per status and undeclared leaks', () => {
    const by = (s: string) => results.results.filter((r) => r.status === s).length;
    expect(html).toContain(`data-summary="pass">${by('pass')}<`);
    expect(html).toContain(`data-summary="fail">${by('fail')}<`);
    expect(html).toContain(`data-summary="skip">${by('skip')}<`);
    expect(html).toContain(`data-summary="expected-fail">${by('expected-fail')}<`);
    const undeclared = results.results.filter((r) => r.status !== 'expected-fail').reduce((n, r) => n + r.leaks.length, 0);
    expect(undeclared).toBe(3);
    expect(html).toContain(`data-summary="undeclared-leaks">3<`);
    expect(html).toContain('data-summary="declared-leaks">4<');
  });

  it('lists every failure and every leak with pid, role, fd, target and scenario; and the notes', () => {
    const [start, end] = sectionRange(html, 'details');
    const details = html.slice(start, end);
    const nameOf = (r: ResultRow) => {
      const it = (r as ResultRow & { iteration?: number }).iteration;
      return it !== undefined && it > 1 ? `${r.scenario} #${it}` : r.scenario;
    };
    for (const r of results.results.filter((x) => x.status === 'fail')) {
      expect(details).toContain(`<b>${esc(nameOf(r))}</b> on <b>${esc(r.transport)}</b>`);
      expect(details).toContain(`<pre>${esc(r.error)}</pre>`);
    }
    const leaks = results.results.flatMap((r) => r.leaks.map((l) => ({ r, l })));
    expect(count(details, '<tr class="undeclared"') + count(details, '<tr class="declared"')).toBe(leaks.length);
    for (const { r, l } of leaks) {
      expect(details).toContain(
        `${esc(r.scenario)}</a></td><td>${esc(r.transport)}</td><td>${l.pid}</td><td>${esc(l.role)}</td><td>${l.fd}</td><td class="target"><code>${esc(l.target)}</code></td>`,
      );
    }
    // Undeclared leaks are listed first.
    expect(details.indexOf('<tr class="undeclared"')).toBeLessThan(details.indexOf('<tr class="declared"'));
    expect(details).toContain(`<li>${esc(HOSTILE_NOTE)}</li>`);
    expect(details).toContain('faultsInjected = <b>3</b>');
    // Every in-page link lands on an element.
    const ids = new Set(tags.map((t) => t.attrs.get('id')).filter(Boolean));
    for (const t of tags) {
      const href = t.attrs.get('href');
      if (href?.startsWith('#')) expect(ids.has(href.slice(1))).toBe(true);
    }
    expect(ids.size).toBe(tags.filter((t) => t.attrs.has('id')).length);
  });

  it('shows the passes of --repeat apart, and fds a scenario closed that were not its own', () => {
    const cell = tags.filter((t) => t.attrs.get('data-scenario') === 'truncate-far-side');
    expect(cell.map((t) => t.attrs.get('data-iteration'))).toEqual(['1', '2']); // in pass order
    const second = html.slice(cell[1]!.at, html.indexOf('</a>', cell[1]!.at));
    expect(second).toContain('✂ 1');
    expect(second).toContain('#2');
    expect(cell[1]!.attrs.get('title')).toContain('4242 helper 3 -> /dev/null');
    expect(html).toContain('data-summary="wrongly-closed">1<');
    const [start, end] = sectionRange(html, 'details');
    expect(html.slice(start, end)).toContain(
      'truncate-far-side #2</a></td><td>helper</td><td>4242</td><td>helper</td><td>3</td><td class="target"><code>/dev/null</code></td>',
    );
    expect(html).toContain('<b>truncate-far-side #2</b> on <b>helper</b>');
    expect(html).toContain('<b>seed-bug-leaks-dup-on-error</b> on <b>direct</b> <span class="muted">(declared: leak)</span>');
  });

  it('shows the environment and the options: seed, shard, profile', () => {
    expect(html).toContain('seed <b>1234567</b>');
    expect(html).toContain('shard <b>2/3</b>');
    expect(html).toContain(`profile <b>${esc('ci<&>')}</b>`);
    expect(html).toContain(esc(results.environment.cpuModel));
    expect(html).toContain(results.environment.gitCommit);
    expect(html).toContain('<th scope="row">row time limit</th><td>30000 ms</td>');
  });

  it('is deterministic, and copes with an empty run and a log-scale spread', () => {
    expect(renderHtmlReport(sampleResults())).toBe(html);

    const empty: ResultsFile = { ...sampleResults(), anchors: [], results: [] };
    const page = renderHtmlReport(empty);
    scanTags(page);
    expect(count(page, 'data-scenario="')).toBe(0);
    expect(page).not.toContain('<svg');

    const wide = sampleResults();
    wide.results = wide.results.filter((r) => r.transport === 'direct');
    wide.results[0]!.latency = { meanUs: 90000, p50Us: 80000, p99Us: 120000, samples: 10, opsPerSec: 11 };
    wide.results[1]!.latency = { meanUs: NaN, p50Us: 5, p99Us: Infinity, samples: 10, opsPerSec: NaN };
    const widePage = renderHtmlReport(wide);
    scanTags(widePage);
    expect(widePage).toContain('latency, log scale');
    expect(widePage).not.toMatch(/NaN|Infinity/);
  });
});

describe('writeHtmlReport', () => {
  it('creates the directory and writes the page, leaving no temporary file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-report-'));
    try {
      const path = join(dir, 'a', 'b', 'index.html');
      writeHtmlReport(sampleResults(), path);
      expect(readFileSync(path, 'utf8')).toBe(renderHtmlReport(sampleResults()));
      writeHtmlReport(sampleResults(), path); // replaces
      expect(readdirSync(join(dir, 'a', 'b'))).toEqual(['index.html']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------
// headless Chromium

// Debian's package; FDBRIDGE_CHROMIUM points elsewhere (or at nothing, to see the skip).
const CHROMIUM = process.env.FDBRIDGE_CHROMIUM ?? '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
const SKIP_REASON = `${CHROMIUM} is not installed (Debian: apt-get install chromium)`;
if (!haveChromium) {
  // eslint-disable-next-line no-console
  console.log(`SKIP report-html Chromium tests: ${SKIP_REASON}`);
}
const itChromium = haveChromium ? it : it.skip;

interface BrowserRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Runs headless Chromium on one local page in its own process group, with a
 * fresh profile, and waits for it to exit and its pipes to close ('close',
 * not 'exit': the jest setup checks this process's fd table afterwards).
 * A hang is killed, group and all.
 */
async function runChromium(page: string, mode: string[], timeoutMs = 20_000): Promise<BrowserRun> {
  const profile = mkdtempSync(join(tmpdir(), 'fdbridge-chromium-'));
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--user-data-dir=${profile}`,
    '--enable-logging=stderr',
    '--v=0',
    ...mode,
    `file://${page}`,
  ];
  try {
    const child = spawn(CHROMIUM, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let timedOut = false;
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // ESRCH: the group is gone already.
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, timeoutMs);
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (c: number | null, s: NodeJS.Signals | null) => resolve({ code: c, signal: s }));
    }).finally(() => clearTimeout(timer));
    // Renderers and the zygote may outlive the browser process by a moment:
    // SIGKILL what is left of the group. Not waited for: orphans are reaped by
    // init, which can take a second or more in a container, and a zombie holds
    // no fd. (Chromium's crashpad handler daemonizes into its own session and
    // exits by itself.)
    killGroup();
    return { code, signal, stdout, stderr, timedOut };
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Lines where Chromium reports something the page did: console output, uncaught errors, CSP refusals. */
function pageComplaints(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /:CONSOLE|Uncaught|Content Security Policy|Refused to/i.test(l));
}

describe('the page in headless Chromium', () => {
  let dir = '';
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fdbridge-html-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  itChromium('reports a page error on stderr (the check below can fail)', async () => {
    const page = join(dir, 'control.html');
    writeFileSync(page, '<!DOCTYPE html><html><body><p>x</p><script>throw new Error("control-boom")</script></body></html>');
    const run = await runChromium(page, ['--dump-dom']);
    expect(run.timedOut).toBe(false);
    expect(pageComplaints(run.stderr).join('\n')).toContain('Uncaught Error: control-boom');
  }, 30_000);

  itChromium('opens without console errors and shows every row', async () => {
    const results = sampleResults();
    const page = join(dir, 'report', 'index.html');
    writeHtmlReport(results, page);
    const run = await runChromium(page, ['--dump-dom']);
    expect(run.timedOut).toBe(false);
    expect({ code: run.code, complaints: pageComplaints(run.stderr) }).toEqual({ code: 0, complaints: [] });

    const dom = run.stdout;
    // Chromium serialises attribute values with only & and " escaped; look at elements, not values.
    const elements = dom.replace(/="[^"]*"/g, '=""');
    expect(elements).not.toMatch(/<script/i);
    expect(count(dom, 'data-scenario="')).toBe(results.results.length);
    const rows = [...dom.matchAll(/data-row="(\d+)"/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
    expect(rows).toEqual(results.results.map((_, i) => i));
    // One chart for every transport.
    expect(count(elements, '<svg ')).toBe(1);
    // The hostile scenario name is text in the DOM, not an element.
    expect(dom).toContain('&lt;script&gt;alert("scenario")&lt;/script&gt;');
  }, 30_000);
});
