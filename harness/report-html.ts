/**
 * report/index.html: one self-contained page built from a results.json.
 *
 * No network and no script: inline CSS, SVG drawn here, nothing fetched. A
 * Content-Security-Policy meta (default-src 'none') makes that a tripwire as
 * well as a habit: a browser refuses, and logs, any script or resource that
 * slips in.
 *
 * Every string that comes from results (scenario names, errors, notes, fd
 * targets: readlink output is arbitrary bytes) goes through `esc()`, in text
 * and in attributes alike. Nothing from results is ever placed in a tag name,
 * an attribute name, a URL or CSS.
 *
 * Each results row appears exactly once in the matrix as an element with
 * `data-row` (its index in results), `data-scenario`, `data-transport` and
 * `data-status`; nothing else on the page carries `data-scenario`, so a test
 * can count rows by it.
 */
import { stripVTControlCharacters } from 'node:util';

import { describeFdOrigin } from '../src/fd-track';
import type { Latency, Leak, ResultRow, ResultsFile, Status } from './types';
import { writeFileAtomic } from './write-file';

// ---------------------------------------------------------------------------
// public

/** Renders the whole page; pure (no I/O, no clock), so the same results give the same bytes. */
export function renderHtmlReport(results: ResultsFile): string {
  const rows = results.results ?? [];
  const anchors = (results.anchors ?? []).filter((a) => a && a.latency);
  const transports = transportOrder(results);
  const env = results.environment;
  const title = `fdbridge report: ${env?.gitCommit ? shortCommit(env.gitCommit) : 'results'}`;

  return htmlPage(title, [
    `<header><h1>fdbridge report</h1>${renderRunLine(results)}</header>`,
    '<nav><a href="#summary">Summary</a> · <a href="#matrix">Matrix</a> · <a href="#latency">Latency</a> · <a href="#details">Details</a> · <a href="#environment">Environment</a></nav>',
    '<main>',
    renderSummary(results),
    renderMatrix(rows, transports),
    renderLatency(rows, transports, anchors),
    renderDetails(rows),
    renderEnvironment(results),
    '</main>',
  ]);
}

/**
 * A self-contained page (the report's and the bench's): `title` (escaped
 * here), the report's CSS inline, and `body` (HTML lines). Nothing may load
 * (no script, no font, no image beyond data:), and an empty icon keeps a
 * browser from asking for /favicon.ico.
 */
export function htmlPage(title: string, body: readonly string[]): string {
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`,
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<link rel="icon" href="data:,">',
    `<title>${esc(title)}</title>`,
    `<style>${CSS}</style>`,
    '</head>',
    '<body>',
    ...body,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

/** Writes the page to `path`, creating its directory; replaces an old page atomically (rename). */
export function writeHtmlReport(results: ResultsFile, path: string): void {
  writeFileAtomic(path, renderHtmlReport(results));
}

// ---------------------------------------------------------------------------
// text

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * Escapes for HTML text and quoted attribute values (and inline SVG, which the
 * HTML parser reads the same way). C0 controls other than tab/newline/CR are
 * not allowed in HTML text (NUL becomes U+FFFD at best), and an fd target can
 * hold any byte, so they are shown as visible `\xNN`.
 */
/**
 * Text from results as it should read: without ANSI colour sequences
 * (node:assert colours its diffs when stderr is a terminal, and a results
 * file written then carries them).
 */
function plain(value: unknown): string {
  return stripVTControlCharacters(String(value ?? ''));
}

export function esc(value: unknown): string {
  return String(value ?? '')
    .replace(/[&<>"']/g, (c) => ESCAPES[c] as string)
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function shortCommit(commit: string): string {
  return /^[0-9a-f]{12,}$/i.test(commit) ? commit.slice(0, 12) : commit;
}

function isNum(n: unknown): n is number {
  return typeof n === 'number' && Number.isFinite(n);
}

/** Microseconds for people: 3 significant figures, ms from 1000 µs. */
export function formatUs(us: number | undefined): string {
  if (!isNum(us)) return '—';
  if (us === 0) return '0';
  if (Math.abs(us) >= 1000) return `${sig(us / 1000)} ms`;
  return `${sig(us)} µs`;
}

function sig(n: number): string {
  const a = Math.abs(n);
  if (a >= 100) return n.toFixed(0);
  if (a >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function formatRatio(value: number | undefined, anchor: number | undefined): string {
  if (!isNum(value) || !isNum(anchor) || anchor <= 0) return '—';
  return `${ratio(value / anchor)}×`;
}

/** A ratio: three figures from 1 up, two below (0.030, not 0.03). */
function ratio(r: number): string {
  return r >= 1 || r === 0 ? sig(r) : r.toPrecision(2);
}

function formatInt(n: number | undefined): string {
  return isNum(n) ? Math.round(n).toLocaleString('en-US') : '—';
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

function formatLeak(l: Leak): string {
  return `${l.pid} ${l.role} ${l.fd} -> ${l.target}`;
}

// ---------------------------------------------------------------------------
// statuses

interface StatusLook {
  /** A symbol plus a word, so the matrix reads without colour. */
  symbol: string;
  label: string;
  meaning: string;
}

const STATUS: Record<Status, StatusLook> = {
  pass: { symbol: '✓', label: 'pass', meaning: 'behaved as declared, no leak' },
  fail: { symbol: '✗', label: 'FAIL', meaning: 'did not behave as declared, or leaked undeclared' },
  'expected-fail': { symbol: '◆', label: 'xfail', meaning: 'a known bug reproduced on purpose, and caught' },
  skip: { symbol: '○', label: 'skip', meaning: 'not run here (reason in the tooltip and details)' },
};
const STATUS_ORDER: Status[] = ['pass', 'expected-fail', 'fail', 'skip'];

function statusOf(row: ResultRow): Status {
  return row.status in STATUS ? row.status : 'fail';
}

function statusClass(s: Status): string {
  return s === 'expected-fail' ? 'xfail' : s;
}

/**
 * Fields a newer runner adds to a row (read structurally, so this file
 * compiles against the types with or without them): fds the scenario closed
 * that were open before it, the declared expectation, and the --repeat pass.
 */
interface RowExtras {
  closed?: Leak[];
  expect?: string;
  iteration?: number;
}

function extras(row: ResultRow): RowExtras {
  return row as ResultRow & RowExtras;
}

function closedOf(row: ResultRow): Leak[] {
  const c = extras(row).closed;
  return Array.isArray(c) ? c : [];
}

/** The --repeat pass, when there is more than one. */
function iterationOf(row: ResultRow): number {
  const it = extras(row).iteration;
  return isNum(it) ? it : 1;
}

/** The scenario's name, with '#k' for a second or later --repeat pass. */
function rowName(row: ResultRow): string {
  return iterationOf(row) > 1 ? `${row.scenario} #${iterationOf(row)}` : row.scenario;
}

/**
 * A leak on an expected-fail row is the one its scenario declared (the oracle
 * had to see it); a leak anywhere else was not declared.
 */
function undeclaredLeaks(row: ResultRow): number {
  return statusOf(row) === 'expected-fail' ? 0 : (row.leaks ?? []).length;
}

// ---------------------------------------------------------------------------
// ordering

/** The transports asked for, in their order, then any others the rows name. */
function transportOrder(results: ResultsFile): string[] {
  const order: string[] = [];
  for (const t of results.options?.transports ?? []) if (!order.includes(t)) order.push(t);
  const extra = new Set<string>();
  for (const r of results.results ?? []) if (!order.includes(r.transport)) extra.add(r.transport);
  return [...order, ...[...extra].sort()];
}

/** Scenario names sorted (runs shuffle them by seed; a reader looks them up by name). */
function scenarioOrder(rows: readonly ResultRow[]): string[] {
  return [...new Set(rows.map((r) => r.scenario))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

// ---------------------------------------------------------------------------
// header, summary

function renderRunLine(results: ResultsFile): string {
  const o = results.options;
  const e = results.environment;
  const parts: string[] = [];
  if (o) {
    parts.push(`seed <b>${esc(o.seed)}</b>`);
    const merged = results.shards?.length;
    parts.push(merged ? `merged from <b>${plural(merged, 'shard')}</b>` : `shard <b>${o.shard ? `${esc(o.shard.index)}/${esc(o.shard.count)}` : 'all'}</b>`);
    parts.push(`profile <b>${esc(o.profile ?? 'default')}</b>`);
  }
  if (e) {
    parts.push(`node ${esc(e.node)} on ${esc(e.platform)} ${esc(e.kernel)}, ${esc(e.cores)} × ${esc(e.cpuModel)}`);
    parts.push(`commit <b>${esc(shortCommit(e.gitCommit ?? '?'))}</b>`);
    parts.push(`${esc(e.date)}`);
  }
  return `<p class="runline">${parts.join(' · ')}</p>`;
}

function renderSummary(results: ResultsFile): string {
  const rows = results.results ?? [];
  const counts = new Map<Status, number>(STATUS_ORDER.map((s) => [s, 0]));
  for (const r of rows) counts.set(statusOf(r), (counts.get(statusOf(r)) ?? 0) + 1);
  const undeclared = rows.reduce((n, r) => n + undeclaredLeaks(r), 0);
  const declared = rows.reduce((n, r) => n + (r.leaks ?? []).length, 0) - undeclared;
  const wronglyClosed = rows.reduce((n, r) => n + closedOf(r).length, 0);
  const failed = counts.get('fail') ?? 0;
  const ok = failed === 0 && undeclared === 0;

  const tiles = STATUS_ORDER.map((s) => {
    const look = STATUS[s];
    return `<div class="tile ${statusClass(s)}" title="${esc(look.meaning)}"><span class="n" data-summary="${s}">${counts.get(s) ?? 0}</span><span class="k">${look.symbol} ${esc(look.label)}</span></div>`;
  });
  tiles.push(
    `<div class="tile ${undeclared > 0 ? 'leak' : 'noleak'}" title="leaks on rows that did not declare one"><span class="n" data-summary="undeclared-leaks">${undeclared}</span><span class="k">⚠ ${undeclared === 1 ? 'undeclared leak' : 'undeclared leaks'}</span></div>`,
  );
  tiles.push(
    `<div class="tile declared" title="leaks that expected-failure scenarios declared, and the oracle caught"><span class="n" data-summary="declared-leaks">${declared}</span><span class="k">◆ ${declared === 1 ? 'declared leak' : 'declared leaks'}</span></div>`,
  );

  if (wronglyClosed > 0) {
    tiles.push(
      `<div class="tile leak" title="fds that were open before a scenario and closed during it (a wrong-fd close)"><span class="n" data-summary="wrongly-closed">${wronglyClosed}</span><span class="k">✂ ${wronglyClosed === 1 ? 'wrongly closed fd' : 'wrongly closed fds'}</span></div>`,
    );
  }

  const verdict = ok
    ? `<p class="verdict ok">✓ Every row passed or is a declared expected failure; no undeclared leaks (${plural(rows.length, 'row')}).</p>`
    : `<p class="verdict bad">✗ ${plural(failed, 'failure')} and ${plural(undeclared, 'undeclared leak')} in ${plural(rows.length, 'row')}.</p>`;

  const totals = results.totals && Object.keys(results.totals).length > 0
    ? `<h3>Totals</h3>${renderKeyValues(Object.entries(results.totals).map(([k, v]) => [readableName(k), formatTotal(k, v)]))}`
    : '';

  return `<section id="summary"><h2>Summary</h2>${verdict}<div class="tiles">${tiles.join('')}</div>${totals}</section>`;
}

/** Words people use for a few of the names' parts. */
const WORDS: Record<string, string> = { rss: 'RSS', cpu: 'CPU', fds: 'fds', fd: 'fd', ms: 'ms', us: 'µs', io: 'I/O' };

/**
 * A results name for people: camelCase split into words, the unit suffix
 * (Bytes, Ms, Us) left to the value. `clientPeakRssBytes` -> `client peak RSS`.
 */
export function readableName(key: string): string {
  const words = key
    .replace(/(Bytes|Ms|Us)$/, '')
    .split(/(?<=[a-z0-9])(?=[A-Z])/)
    .map((w) => w.toLowerCase());
  return words.map((w) => WORDS[w] ?? w).join(' ') || key;
}

/** Bytes in the largest unit that keeps a whole number readable: 204382208 -> '195 MB' (MB = 2^20 bytes). */
export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 || Math.abs(v) >= 10 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1)} ${units[u]}`;
}

/** A total's value in the unit its name ends with: bytes as KB/MB, Ms as ms, Us as µs, else a count. */
function formatTotal(key: string, v: unknown): string {
  if (!isNum(v)) return String(v);
  if (key.endsWith('Bytes')) return formatBytes(v);
  if (key.endsWith('Ms')) return `${formatMetric(v)} ms`;
  if (key.endsWith('Us')) return formatUs(v);
  return formatMetric(v);
}

function formatMetric(v: unknown): string {
  return isNum(v) ? (Number.isInteger(v) ? formatInt(v) : sig(v)) : String(v);
}

function renderKeyValues(pairs: Array<[string, string]>): string {
  return `<table class="kv"><tbody>${pairs.map(([k, v]) => `<tr><th scope="row">${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</tbody></table>`;
}

// ---------------------------------------------------------------------------
// matrix

function renderMatrix(rows: readonly ResultRow[], transports: readonly string[]): string {
  const index = new Map<string, Array<{ row: ResultRow; i: number }>>();
  rows.forEach((row, i) => {
    const key = `${row.scenario}\u0000${row.transport}`;
    const list = index.get(key) ?? [];
    list.push({ row, i });
    index.set(key, list);
  });

  const head = `<tr><th scope="col" class="corner">scenario \\ transport</th>${transports.map((t) => `<th scope="col">${esc(t)}</th>`).join('')}</tr>`;
  const body = scenarioOrder(rows).map((scenario) => {
    const cells = transports.map((t) => {
      const entries = index.get(`${scenario}\u0000${t}`);
      if (!entries) return '<td class="cell na" title="not run on this transport">·</td>';
      const sorted = [...entries].sort((a, b) => iterationOf(a.row) - iterationOf(b.row));
      return `<td class="cell">${sorted.map(({ row, i }) => renderMark(row, i, entries.length > 1)).join('')}</td>`;
    });
    return `<tr><th scope="row" class="scn">${esc(scenario)}</th>${cells.join('')}</tr>`;
  });

  const legend = STATUS_ORDER.map((s) => `<span class="mark ${statusClass(s)}">${STATUS[s].symbol} ${esc(STATUS[s].label)}</span> ${esc(STATUS[s].meaning)}`)
    .concat([
      '<span class="mark pass leaky"><span class="leaks">⚠ 2</span></span> the oracle saw 2 leaked fds (hover a cell for the list)',
      '<span class="mark fail leaky"><span class="leaks">✂ 1</span></span> 1 fd that was open before the scenario was closed by it',
      '<span class="mark pass"><span class="iter">#2</span></span> the second pass of --repeat',
    ])
    .map((l) => `<li>${l}</li>`)
    .join('');

  return `<section id="matrix"><h2>Scenarios × transports</h2>
<table class="matrix"><thead>${head}</thead><tbody>${body.join('\n')}</tbody></table>
<ul class="legend">${legend}</ul></section>`;
}

/** One results row in its matrix cell; the only element on the page with data-scenario. */
function renderMark(row: ResultRow, i: number, showIteration: boolean): string {
  const s = statusOf(row);
  const look = STATUS[s];
  const leaks = row.leaks ?? [];
  const closed = closedOf(row);
  const { expect } = extras(row);
  const iteration = iterationOf(row);
  const tip: string[] = [`${rowName(row)} on ${row.transport}: ${look.label} (${look.meaning})`];
  if (typeof expect === 'string' && expect !== 'pass') tip.push(`declared: ${expect}`);
  if (isNum(row.durationMs)) tip.push(`took ${sig(row.durationMs)} ms`);
  if (isNum(row.shard)) tip.push(`ran in shard ${row.shard}`);
  if (row.error) tip.push(`${s === 'skip' ? 'reason' : s === 'expected-fail' ? 'caught' : 'error'}: ${plain(row.error)}`);
  if (leaks.length > 0) {
    tip.push(`${plural(leaks.length, 'leaked fd')} (${s === 'expected-fail' ? 'declared' : 'undeclared'}), pid role fd -> target:`);
    for (const l of leaks) tip.push(`  ${formatLeak(l)}`);
  }
  if (closed.length > 0) {
    tip.push(`${plural(closed.length, 'fd')} open before and closed during it (wrong-fd close), pid role fd -> target:`);
    for (const l of closed) tip.push(`  ${formatLeak(l)}`);
  }
  if (row.latency) tip.push(`p50 ${formatUs(row.latency.p50Us)}, p99 ${formatUs(row.latency.p99Us)}`);
  for (const n of row.notes ?? []) tip.push(`note: ${plain(n)}`);

  const leakBadge = leaks.length > 0 ? ` <span class="leaks">⚠ ${leaks.length}</span>` : '';
  const closedBadge = closed.length > 0 ? ` <span class="leaks">✂ ${closed.length}</span>` : '';
  const iterBadge = showIteration ? ` <span class="iter">#${iteration}</span>` : '';
  const cls = `mark ${statusClass(s)}${leaks.length + closed.length > 0 ? ' leaky' : ''}`;
  const tag = hasDetails(row) ? 'a' : 'span';
  const href = tag === 'a' ? ` href="#row-${i}"` : '';
  return `<${tag} class="${cls}"${href} data-row="${i}" data-scenario="${esc(row.scenario)}" data-transport="${esc(row.transport)}" data-status="${esc(s)}" data-leaks="${leaks.length}" data-iteration="${iteration}" title="${esc(tip.join('\n'))}">${look.symbol} ${esc(look.label)}${leakBadge}${closedBadge}${iterBadge}</${tag}>`;
}

/**
 * Whether the details section has an entry (id row-<i>) for this row: every
 * row that is not a plain pass, and a pass that leaked or left notes.
 */
function hasDetails(row: ResultRow): boolean {
  return statusOf(row) !== 'pass' || (row.leaks ?? []).length > 0 || closedOf(row).length > 0 || (row.notes ?? []).length > 0 || (row.metrics !== undefined && Object.keys(row.metrics).length > 0);
}

// ---------------------------------------------------------------------------
// latency

interface Anchor {
  name: string;
  latency: Latency;
}

function renderLatency(rows: readonly ResultRow[], transports: readonly string[], anchors: readonly Anchor[]): string {
  const anchorTable = anchors.length === 0
    ? '<p class="muted">No anchors were measured in this run, so there is nothing to compare against.</p>'
    : `<table class="data"><thead><tr><th>anchor</th><th>p50</th><th>p99</th><th>mean</th><th>ops/s</th><th>samples</th></tr></thead><tbody>${anchors
        .map((a, k) => `<tr><th scope="row"><span class="swatch" style="background:${anchorColour(k)}"></span>${esc(a.name)}</th>${latencyCells(a.latency)}</tr>`)
        .join('')}</tbody></table>`;

  const measuredOn = (t: string): ResultRow[] =>
    rows
      .filter((r) => r.transport === t && r.latency && isNum(r.latency.p50Us))
      .sort((a, b) => (a.scenario < b.scenario ? -1 : a.scenario > b.scenario ? 1 : iterationOf(a) - iterationOf(b)));
  const benched = transports.filter((t) => measuredOn(t).length > 0);
  const perTransport = transports.map((t) => {
    const measured = measuredOn(t);
    if (measured.length === 0) {
      return `<div class="transport"><h3>${esc(t)}</h3><p class="muted">No latency measured on ${esc(t)} (run with --bench).</p></div>`;
    }
    return `<div class="transport"><h3>${esc(t)}</h3>${renderRatioSummary(t, measured, anchors)}${renderLatencyTable(measured, anchors)}</div>`;
  });

  return `<section id="latency"><h2>Latency</h2>
<p class="muted">One chart for every transport, on one axis: per scenario, a bar to the median (p50) of its benchmarked operation on each transport, a whisker to p99; the in-run anchors are the hatched bars at the top and the dashed lines. Shorter is faster.</p>
${benched.length > 0 ? renderChart(rows, benched, anchors) : ''}
<p class="muted ratio-rule">Ratios below are <b>transport p50 ÷ anchor p50: lower is better</b> (below 1, the transport is faster than the anchor). A goal written the other way round, such as “Node handle passing ÷ round trip ≥ 4”, is 1 ÷ this ratio (there, this ratio ≤ 0.25).</p>
<h3>Anchors</h3>${anchorTable}${perTransport.join('\n')}</section>`;
}

function latencyCells(l: Latency): string {
  return `<td>${formatUs(l.p50Us)}</td><td>${formatUs(l.p99Us)}</td><td>${formatUs(l.meanUs)}</td><td>${formatInt(l.opsPerSec)}</td><td>${formatInt(l.samples)}</td>`;
}

function renderLatencyTable(measured: readonly ResultRow[], anchors: readonly Anchor[]): string {
  const head = `<tr><th>scenario</th><th>status</th><th>p50</th><th>p99</th><th>mean</th><th>ops/s</th><th>samples</th>${anchors.map((a) => `<th title="p50 ÷ this anchor's p50: lower is better">÷ ${esc(a.name)} <span class="better">(lower is better)</span></th>`).join('')}</tr>`;
  const body = measured.map((r) => {
    const l = r.latency as Latency;
    const s = statusOf(r);
    const ratios = anchors.map((a) => `<td>${formatRatio(l.p50Us, a.latency.p50Us)}</td>`).join('');
    return `<tr><th scope="row">${esc(rowName(r))}</th><td><span class="mark ${statusClass(s)}">${STATUS[s].symbol} ${esc(STATUS[s].label)}</span></td>${latencyCells(l)}${ratios}</tr>`;
  });
  return `<div class="tablebox"><table class="data"><thead>${head}</thead><tbody>${body.join('')}</tbody></table></div>`;
}

/** One sentence per anchor: the geometric mean of the ratios, and the range. */
function renderRatioSummary(transport: string, measured: readonly ResultRow[], anchors: readonly Anchor[]): string {
  const lines = anchors.flatMap((a) => {
    const base = a.latency.p50Us;
    if (!isNum(base) || base <= 0) return [];
    const ratios = measured.map((r) => (r.latency as Latency).p50Us / base).filter((x) => isNum(x) && x > 0);
    if (ratios.length === 0) return [];
    const geo = Math.exp(ratios.reduce((s, x) => s + Math.log(x), 0) / ratios.length);
    const lo = Math.min(...ratios);
    const hi = Math.max(...ratios);
    const verdict = geo < 1 ? `faster than ${esc(a.name)}` : geo > 1 ? `slower than ${esc(a.name)}` : `as fast as ${esc(a.name)}`;
    return [
      `<li>p50 on <b>${esc(transport)}</b> is <b>${ratio(geo)}×</b> <b>${esc(a.name)}</b>: ${verdict} (geometric mean over ${plural(ratios.length, 'scenario')}; ${ratio(lo)}× to ${ratio(hi)}×; lower is better).</li>`,
    ];
  });
  return lines.length > 0 ? `<ul class="ratios">${lines.join('')}</ul>` : '';
}

const ANCHOR_COLOURS = ['#b45309', '#7c3aed', '#0f766e', '#be185d', '#4d7c0f'];
function anchorColour(k: number): string {
  return ANCHOR_COLOURS[k % ANCHOR_COLOURS.length] as string;
}

/**
 * A value -> x mapping with ticks; log when the values span more than 30×
 * (a 2 µs bar beside a 150 µs one is a sliver on a linear axis).
 */
interface Scale {
  x(v: number): number;
  ticks: number[];
  log: boolean;
}

function makeScale(values: readonly number[], x0: number, x1: number): Scale {
  const pos = values.filter((v) => isNum(v) && v > 0);
  const max = pos.length > 0 ? Math.max(...pos) : 1;
  const min = pos.length > 0 ? Math.min(...pos) : 1;
  if (max / min > 30) {
    const lo = Math.floor(Math.log10(min));
    const hi = Math.ceil(Math.log10(max));
    const span = Math.max(1, hi - lo);
    const ticks: number[] = [];
    for (let d = lo; d <= hi; d++) ticks.push(10 ** d);
    return {
      x: (v) => x0 + ((Math.log10(Math.max(v, 10 ** lo)) - lo) / span) * (x1 - x0),
      ticks,
      log: true,
    };
  }
  const step = niceStep(max / 5);
  const top = Math.max(step, Math.ceil(max / step) * step);
  const ticks: number[] = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
  return { x: (v) => x0 + (Math.max(0, Math.min(v, top)) / top) * (x1 - x0), ticks, log: false };
}

function niceStep(raw: number): number {
  if (!(raw > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * p;
}

function truncate(s: string, n: number): string {
  const chars = [...s];
  return chars.length <= n ? s : `${chars.slice(0, n - 1).join('')}…`;
}

const TRANSPORT_COLOURS: Array<[fill: string, stroke: string]> = [
  ['#93c5fd', '#1d4ed8'],
  ['#86efac', '#15803d'],
  ['#fcd34d', '#b45309'],
  ['#f9a8d4', '#be185d'],
  ['#c4b5fd', '#6d28d9'],
  ['#5eead4', '#0f766e'],
  ['#d6d3d1', '#57534e'],
];
function transportColour(k: number): [string, string] {
  return TRANSPORT_COLOURS[k % TRANSPORT_COLOURS.length] as [string, string];
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] as number;
}

/** One bar of the chart: a scenario on a transport, its passes folded (median p50 and p99). */
interface ChartBar {
  scenario: string;
  transport: string;
  latency: Latency;
  status: Status;
  passes: number;
}

function chartBars(rows: readonly ResultRow[], transports: readonly string[]): Map<string, ChartBar[]> {
  const groups = new Map<string, ChartBar[]>();
  for (const scenario of scenarioOrder(rows.filter((r) => r.latency && isNum(r.latency.p50Us)))) {
    const bars: ChartBar[] = [];
    for (const transport of transports) {
      const measured = rows.filter((r) => r.scenario === scenario && r.transport === transport && r.latency && isNum(r.latency.p50Us));
      if (measured.length === 0) continue;
      const ls = measured.map((r) => r.latency as Latency);
      const worst = measured.map(statusOf).sort((a, b) => STATUS_ORDER.indexOf(b) - STATUS_ORDER.indexOf(a))[0] as Status;
      bars.push({
        scenario,
        transport,
        latency: {
          p50Us: median(ls.map((l) => l.p50Us)),
          p99Us: median(ls.map((l) => l.p99Us).filter(isNum)),
          meanUs: median(ls.map((l) => l.meanUs).filter(isNum)),
          samples: ls.reduce((n, l) => n + (isNum(l.samples) ? l.samples : 0), 0),
          opsPerSec: median(ls.map((l) => l.opsPerSec).filter(isNum)),
        },
        status: worst,
        passes: measured.length,
      });
    }
    groups.set(scenario, bars);
  }
  return groups;
}

/**
 * Every transport on one axis: one group per benchmarked scenario, one bar
 * per transport in it (its colour in the legend), the anchors as hatched
 * bars at the top. Each anchor's p50 also runs down the plot as a dashed
 * line, drawn first so that bars and numbers lie over it, and every number
 * has a white halo, so no line strikes through a label.
 */
function renderChart(rows: readonly ResultRow[], transports: readonly string[], anchors: readonly Anchor[]): string {
  const groups = chartBars(rows, transports);
  const LABEL_CHARS = 34;
  const labelOf = (s: string) => truncate(s, LABEL_CHARS);
  const longest = Math.max(8, ...[...groups.keys()].map((s) => [...labelOf(s)].length), ...anchors.map((a) => [...labelOf(a.name)].length + 2));
  const transportWidth = 12 + Math.max(...transports.map((t) => [...t].length)) * 6.6;
  const W = 980;
  // 12px monospace is about 7.3px a character; the anchor rows add a symbol.
  const left = Math.min(320, 20 + longest * 7.4) + transportWidth;
  const right = W - 80; // room for the value label after the whisker
  const ROW = 14;
  const ANCHOR_ROW = 20;
  const GROUP_GAP = 8;
  const top = 12;
  const nBars = [...groups.values()].reduce((n, g) => n + g.length, 0);
  const gap = anchors.length > 0 ? 10 : 0;
  const plotH = anchors.length * ANCHOR_ROW + gap + nBars * ROW + groups.size * GROUP_GAP;
  const H = top + plotH + 40;

  const values: number[] = [];
  for (const g of groups.values()) for (const b of g) values.push(b.latency.p50Us, b.latency.p99Us);
  for (const a of anchors) values.push(a.latency.p50Us, a.latency.p99Us);
  const scale = makeScale(values, left, right);
  const x = scale.x;
  const axisY = top + plotH + 4;

  const out: string[] = [];
  out.push(
    `<svg class="chart" data-chart="all" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(`p50 and p99 latency per scenario on ${transports.join(', ')}, on one axis, against the anchors`)}">`,
  );
  out.push(`<title>${esc('Latency on every transport: p50 bars, p99 whiskers, anchors hatched and dashed')}</title>`);
  out.push(
    '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f5f5f4"></rect><line x1="0" y1="0" x2="0" y2="6" stroke="#a8a29e" stroke-width="3"></line></pattern></defs>',
  );

  // grid, axis, and the anchors' reference lines: all behind the bars and numbers
  for (const t of scale.ticks) {
    const tx = x(t).toFixed(1);
    out.push(`<line class="grid" x1="${tx}" y1="${top - 4}" x2="${tx}" y2="${axisY}"></line>`);
    // Ticks are round numbers: '10 µs', not '10.0 µs'.
    const label = formatUs(t).replace(/\.0+ /, ' ').replace(/(\.\d*?)0+ /, '$1 ');
    out.push(`<text class="tick" x="${tx}" y="${axisY + 14}" text-anchor="middle">${esc(label)}</text>`);
  }
  out.push(`<line class="axis" x1="${left.toFixed(1)}" y1="${axisY}" x2="${right.toFixed(1)}" y2="${axisY}"></line>`);
  out.push(`<text class="axislabel" x="${right.toFixed(1)}" y="${axisY + 30}" text-anchor="end">${scale.log ? 'latency, log scale (shorter is faster)' : 'latency (shorter is faster)'}</text>`);
  out.push(`<text class="axislabel" x="${left.toFixed(1)}" y="${axisY + 30}">bar: p50 (the number) · whisker: p99 · dashed: anchor p50</text>`);
  const firstBarY = top + anchors.length * ANCHOR_ROW + gap;
  anchors.forEach((a, k) => {
    if (!isNum(a.latency.p50Us)) return;
    const ax = x(a.latency.p50Us).toFixed(1);
    out.push(
      `<line class="ref" x1="${ax}" y1="${firstBarY - gap / 2}" x2="${ax}" y2="${axisY}" stroke="${anchorColour(k)}"><title>${esc(`anchor ${a.name}: p50 ${formatUs(a.latency.p50Us)}`)}</title></line>`,
    );
  });

  const bar = (y: number, h: number, l: Latency, fill: string, stroke: string, tip: string, cls: string, labels: string) => {
    const xp50 = x(l.p50Us);
    const hasP99 = isNum(l.p99Us) && l.p99Us >= l.p50Us;
    const xp99 = hasP99 ? x(l.p99Us) : xp50;
    const cy = y + h / 2;
    const half = Math.min(6, h / 2 - 1);
    const g: string[] = [`<g class="${cls}"><title>${esc(tip)}</title>`, labels];
    g.push(`<rect x="${left.toFixed(1)}" y="${(cy - half).toFixed(1)}" width="${Math.max(1, xp50 - left).toFixed(1)}" height="${(2 * half).toFixed(1)}" fill="${fill}" stroke="${stroke}"></rect>`);
    if (hasP99 && xp99 > xp50) {
      g.push(`<line class="whisker" x1="${xp50.toFixed(1)}" y1="${cy}" x2="${xp99.toFixed(1)}" y2="${cy}"></line>`);
      g.push(`<line class="whisker" x1="${xp99.toFixed(1)}" y1="${cy - half + 1}" x2="${xp99.toFixed(1)}" y2="${cy + half - 1}"></line>`);
    }
    g.push(`<text class="value" x="${(xp99 + 5).toFixed(1)}" y="${cy + 4}">${esc(formatUs(l.p50Us))}</text>`);
    g.push('</g>');
    return g.join('');
  };

  let y = top;
  anchors.forEach((a, k) => {
    const tip = `anchor ${a.name}: p50 ${formatUs(a.latency.p50Us)}, p99 ${formatUs(a.latency.p99Us)}, mean ${formatUs(a.latency.meanUs)}, ${formatInt(a.latency.samples)} samples`;
    const label = `<text class="label" x="${(left - 6).toFixed(1)}" y="${y + ANCHOR_ROW / 2 + 4}" text-anchor="end"><tspan fill="${anchorColour(k)}">⚓ </tspan>${esc(labelOf(a.name))}</text>`;
    out.push(bar(y, ANCHOR_ROW, a.latency, 'url(#hatch)', anchorColour(k), tip, 'anchor', label));
    y += ANCHOR_ROW;
  });
  y += gap;
  for (const [scenario, bars] of groups) {
    y += GROUP_GAP / 2;
    const groupTop = y;
    out.push(`<text class="label" x="${(left - transportWidth - 6).toFixed(1)}" y="${groupTop + ROW / 2 + 4}" text-anchor="end">${esc(labelOf(scenario))}</text>`);
    for (const b of bars) {
      const k = transports.indexOf(b.transport);
      const [fill, stroke] = b.status === 'fail' ? ['#fca5a5', '#b91c1c'] : transportColour(k);
      const ratios = anchors.map((a) => `${formatRatio(b.latency.p50Us, a.latency.p50Us)} ${a.name}`).join(', ');
      const tip =
        `${scenario} on ${b.transport} (${STATUS[b.status].label}): p50 ${formatUs(b.latency.p50Us)}, p99 ${formatUs(b.latency.p99Us)}, ` +
        `${formatInt(b.latency.samples)} samples${b.passes > 1 ? `, median of ${b.passes} passes` : ''}${ratios ? `; p50 ÷ anchor (lower is better): ${ratios}` : ''}`;
      const mark = b.status === 'pass' ? '' : `${STATUS[b.status].symbol} `;
      const label = `<text class="tlabel" x="${(left - 4).toFixed(1)}" y="${y + ROW / 2 + 3.5}" text-anchor="end" fill="${stroke}">${esc(`${mark}${b.transport}`)}</text>`;
      out.push(bar(y, ROW, b.latency, fill, stroke, tip, 'scenario', label));
      y += ROW;
    }
    y += GROUP_GAP / 2;
  }

  out.push('</svg>');
  const legend = transports
    .map((t, k) => `<span class="key"><span class="swatch" style="background:${transportColour(k)[0]};border:1px solid ${transportColour(k)[1]}"></span>${esc(t)}</span>`)
    .concat(anchors.map((a, k) => `<span class="key"><span class="swatch ref" style="border-color:${anchorColour(k)}"></span>⚓ ${esc(a.name)}</span>`))
    .join('');
  return `<div class="chartkeys">${legend}</div><div class="chartbox">${out.join('')}</div>`;
}

// ---------------------------------------------------------------------------
// details

function renderDetails(rows: readonly ResultRow[]): string {
  const indexed = rows.map((row, i) => ({ row, i }));
  const failures = indexed.filter(({ row }) => statusOf(row) === 'fail');
  const xfails = indexed.filter(({ row }) => statusOf(row) === 'expected-fail');
  const skips = indexed.filter(({ row }) => statusOf(row) === 'skip');

  const item = ({ row, i }: { row: ResultRow; i: number }, what: string) =>
    `<li id="row-${i}"><span class="mark ${statusClass(statusOf(row))}">${STATUS[statusOf(row)].symbol} ${esc(STATUS[statusOf(row)].label)}</span> <b>${esc(rowName(row))}</b> on <b>${esc(row.transport)}</b>${declaredNote(row)}${isNum(row.durationMs) ? ` <span class="muted">(${sig(row.durationMs)} ms)</span>` : ''}${row.error ? `<pre>${esc(plain(row.error))}</pre>` : `<p class="muted">${esc(what)}</p>`}</li>`;

  const declaredNote = (row: ResultRow) => {
    const e = extras(row).expect;
    return typeof e === 'string' && e !== 'pass' ? ` <span class="muted">(declared: ${esc(e)})</span>` : '';
  };

  const list = (title: string, items: typeof indexed, empty: string, what: string) =>
    `<h3>${esc(title)} (${items.length})</h3>${items.length === 0 ? `<p class="muted">${esc(empty)}</p>` : `<ol class="rows">${items.map((e) => item(e, what)).join('')}</ol>`}`;

  // Undeclared leaks first: they are what a reader came for.
  const leakRows = indexed
    .flatMap(({ row, i }) => (row.leaks ?? []).map((l) => ({ row, i, l })))
    .sort((a, b) => Number(statusOf(a.row) === 'expected-fail') - Number(statusOf(b.row) === 'expected-fail'));
  const tracked = leakRows.some(({ l }) => l.openedAt !== undefined);
  const leaks = leakRows.length === 0
    ? '<p class="muted">The oracle saw no leaked fd.</p>'
    : `<table class="data leaks"><thead><tr><th>scenario</th><th>transport</th><th>pid</th><th>role</th><th>fd</th><th>target</th><th>declared</th>${tracked ? '<th>opened at (--track-fds)</th>' : ''}</tr></thead><tbody>${leakRows
        .map(({ row, i, l }, k) => {
          const declared = statusOf(row) === 'expected-fail';
          // A passing row's details entry is its first leak (failures have their own entry above).
          const first = statusOf(row) === 'pass' && leakRows.findIndex((e) => e.i === i) === k;
          return `<tr class="${declared ? 'declared' : 'undeclared'}"${first ? ` id="row-${i}"` : ''}><td><a href="#row-${i}">${esc(rowName(row))}</a></td><td>${esc(row.transport)}</td><td>${esc(l.pid)}</td><td>${esc(l.role)}</td><td>${esc(l.fd)}</td><td class="target"><code>${esc(l.target)}</code></td><td>${declared ? '◆ yes' : '<b>⚠ no</b>'}</td>${tracked ? `<td class="origin"><pre>${esc(describeFdOrigin(l.openedAt, '').join('\n'))}</pre></td>` : ''}</tr>`;
        })
        .join('')}</tbody></table>`;

  const closedRows = indexed.flatMap(({ row, i }) => closedOf(row).map((l) => ({ row, i, l })));
  const closedTable = closedRows.length === 0
    ? ''
    : `<h3>Wrongly closed fds (${closedRows.length})</h3><p class="muted">Open before the scenario and closed during it: the scenario (or the code under test) closed an fd it did not own.</p><table class="data leaks"><thead><tr><th>scenario</th><th>transport</th><th>pid</th><th>role</th><th>fd</th><th>target</th></tr></thead><tbody>${closedRows
        .map(({ row, i, l }, k) => `<tr class="closed"${statusOf(row) === 'pass' && (row.leaks ?? []).length === 0 && closedRows.findIndex((e) => e.i === i) === k ? ` id="row-${i}"` : ''}><td><a href="#row-${i}">${esc(rowName(row))}</a></td><td>${esc(row.transport)}</td><td>${esc(l.pid)}</td><td>${esc(l.role)}</td><td>${esc(l.fd)}</td><td class="target"><code>${esc(l.target)}</code></td></tr>`)
        .join('')}</tbody></table>`;

  const noted = indexed.filter(({ row }) => (row.notes ?? []).length > 0 || (row.metrics && Object.keys(row.metrics).length > 0));
  const notes = noted.length === 0
    ? '<p class="muted">No scenario left notes.</p>'
    : `<ul class="notes">${noted
        .map(({ row, i }) => {
          const ns = (row.notes ?? []).map((n) => `<li>${esc(plain(n))}</li>`).join('');
          const ms = row.metrics && Object.keys(row.metrics).length > 0
            ? `<li class="metrics">${Object.entries(row.metrics).map(([k, v]) => `${esc(k)} = <b>${esc(formatMetric(v))}</b>`).join(', ')}</li>`
            : '';
          const own = statusOf(row) === 'pass' && (row.leaks ?? []).length === 0 && closedOf(row).length === 0;
          return `<li${own ? ` id="row-${i}"` : ''}><a href="#row-${i}">${esc(rowName(row))}</a> on ${esc(row.transport)}<ul>${ns}${ms}</ul></li>`;
        })
        .join('')}</ul>`;

  return `<section id="details"><h2>Details</h2>
${list('Failures', failures, 'None.', 'failed without an error message')}
<h3>Leaked fds (${leakRows.length})</h3>${leaks}
${closedTable}
${list('Expected failures caught', xfails, 'None.', 'caught as declared')}
${list('Skipped', skips, 'None.', 'skipped without a reason')}
<h3>Notes</h3>${notes}</section>`;
}

// ---------------------------------------------------------------------------
// environment

function renderEnvironment(results: ResultsFile): string {
  const e = results.environment;
  const o = results.options;
  const env: Array<[string, string]> = e
    ? [
        ['node', e.node],
        ['kernel', e.kernel],
        ['platform', e.platform],
        ['cpu', e.cpuModel],
        ['cores', String(e.cores)],
        ['git commit', e.gitCommit],
        ...(e.hostname ? ([['hostname', e.hostname]] as Array<[string, string]>) : []),
        ['date', e.date],
      ]
    : [];
  const opts: Array<[string, string]> = o
    ? [
        ['seed', String(o.seed)],
        ['shard', o.shard ? `${o.shard.index}/${o.shard.count}` : 'all'],
        ['profile', o.profile ?? 'default'],
        ['transports', (o.transports ?? []).join(', ')],
        ['scenario pattern', o.scenario ?? '(all)'],
        ['bench', o.bench ? 'yes' : 'no'],
        ['repeat', String(o.repeat)],
        ...optionalNumbers(o as unknown as Record<string, unknown>, [
          ['timeoutMs', 'row time limit', 'ms'],
          ['settleMs', 'oracle settle time', 'ms'],
        ]),
      ]
    : [];
  return `<section id="environment"><h2>Environment and options</h2>${renderShards(results)}<div class="two"><div><h3>Environment${results.shards?.length ? ' (shard 1, which measured the anchors)' : ''}</h3>${renderKeyValues(env)}</div><div><h3>Options</h3>${renderKeyValues(opts)}</div></div></section>`;
}

/** A merged run: one line per shard, with where it ran. */
function renderShards(results: ResultsFile): string {
  const shards = results.shards ?? [];
  if (shards.length === 0) return '';
  const body = shards
    .map((s) => {
      const e = s.environment;
      return `<tr><th scope="row">${esc(s.index)}/${esc(s.count)}</th><td>${esc(s.rows)}</td><td>${esc(s.failedRows)}</td><td>${esc(e?.node)}</td><td>${esc(e?.kernel)}</td><td>${esc(e?.cores)} × ${esc(e?.cpuModel)}</td><td>${esc(e?.hostname ?? '')}</td><td>${esc(shortCommit(e?.gitCommit ?? '?'))}</td><td>${esc(e?.date)}</td><td><code>${esc(s.file)}</code></td></tr>`;
    })
    .join('');
  return `<h3>Shards (${shards.length})</h3><div class="tablebox"><table class="data shards"><thead><tr><th>shard</th><th>rows</th><th>failed</th><th>node</th><th>kernel</th><th>cpu</th><th>host</th><th>commit</th><th>date</th><th>file</th></tr></thead><tbody>${body}</tbody></table></div>`;
}

/** Options a newer runner records, shown when present. */
function optionalNumbers(o: Record<string, unknown>, keys: Array<[string, string, string]>): Array<[string, string]> {
  return keys.flatMap(([key, label, unit]) => (isNum(o[key]) ? [[label, `${o[key]} ${unit}`] as [string, string]] : []));
}

// ---------------------------------------------------------------------------
// style

export const CSS = `
:root{--fg:#1c1917;--muted:#57534e;--line:#d6d3d1;--bg:#fff;--pass:#15803d;--pass-bg:#dcfce7;--fail:#b91c1c;--fail-bg:#fee2e2;--xfail:#6d28d9;--xfail-bg:#ede9fe;--skip:#57534e;--skip-bg:#f5f5f4;--leak:#c2410c}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
header{padding:16px 24px 8px;border-bottom:1px solid var(--line)}
h1{margin:0;font-size:22px}
h2{font-size:18px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
nav{padding:6px 24px;background:#fafaf9;border-bottom:1px solid var(--line)}
main{padding:0 24px 40px;max-width:1200px}
a{color:#1d4ed8}
.runline{margin:4px 0 0;color:var(--muted)}
.muted{color:var(--muted)}
.verdict{font-weight:600;padding:8px 12px;border-radius:6px;display:inline-block;margin:4px 0 12px}
.verdict.ok{background:var(--pass-bg);color:var(--pass)}
.verdict.bad{background:var(--fail-bg);color:var(--fail)}
.tiles{display:flex;flex-wrap:wrap;gap:10px}
.tile{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:130px;border-left-width:6px}
.tile .n{display:block;font-size:24px;font-weight:700;font-variant-numeric:tabular-nums}
.tile .k{color:var(--muted)}
.tile.pass{border-left-color:var(--pass)}.tile.fail{border-left-color:var(--fail)}.tile.xfail{border-left-color:var(--xfail)}.tile.skip{border-left-color:var(--skip)}
.tile.leak{border-left-color:var(--leak);background:#fff7ed}.tile.noleak{border-left-color:var(--pass)}.tile.declared{border-left-color:var(--xfail)}
table{border-collapse:collapse}
.kv th{text-align:left;font-weight:600;padding:2px 16px 2px 0;vertical-align:top;white-space:nowrap}
.kv td{padding:2px 0;overflow-wrap:anywhere}
.matrix{margin-top:4px}
.matrix th,.matrix td{border:1px solid var(--line);padding:3px 6px}
.matrix thead th{background:#fafaf9;position:sticky;top:0;font-weight:600}
.matrix .corner{color:var(--muted);font-weight:400;text-align:left}
.matrix .scn{text-align:left;font-weight:500;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;max-width:340px;overflow-wrap:anywhere}
.cell{text-align:center;white-space:nowrap;min-width:92px}
.cell.na{color:#a8a29e;background:#fafaf9}
.mark{display:inline-block;padding:1px 7px;border-radius:4px;font-weight:600;font-size:12.5px;text-decoration:none;border:1px solid transparent}
.cell .mark+.mark{margin-left:3px}
.mark.pass{color:var(--pass);background:var(--pass-bg)}
.mark.fail{color:#fff;background:var(--fail)}
.mark.xfail{color:var(--xfail);background:var(--xfail-bg)}
.mark.skip{color:var(--skip);background:var(--skip-bg);font-weight:400}
.mark.leaky{border-color:var(--leak)}
.mark .leaks{color:var(--leak);font-weight:700}
.mark .iter{color:var(--muted);font-weight:400;font-size:11px}
.mark.fail .iter{color:#fee2e2}
.mark.fail .leaks{color:#ffedd5}
.legend{list-style:none;padding:0;margin:10px 0 0;color:var(--muted);columns:2 420px}
.legend li{margin:2px 0}
.data{margin:6px 0 10px;font-variant-numeric:tabular-nums}
.data th,.data td{border-bottom:1px solid var(--line);padding:3px 10px 3px 0;text-align:right;vertical-align:middle}
.data th:first-child,.data td:first-child{text-align:left}
.data thead th{font-weight:600;border-bottom:2px solid var(--line)}
.tablebox{overflow-x:auto}
.data td,.data .mark{white-space:nowrap}
.data tbody th{white-space:nowrap;font-weight:500;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;overflow-wrap:anywhere;max-width:340px}
.data.leaks th,.data.leaks td,.data.shards th,.data.shards td{text-align:left}
.leaks .target{overflow-wrap:anywhere;max-width:480px}
.leaks .origin pre{margin:0;font-size:11.5px;max-width:640px}
.leaks tr.undeclared{background:#fff7ed}
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
.transport{margin-top:18px;padding-top:6px;border-top:1px dashed var(--line)}
.chartbox{overflow-x:auto}
.chart{max-width:100%;height:auto;font-family:system-ui,"DejaVu Sans",sans-serif}
.chart .grid{stroke:#e7e5e4}
.chart .axis{stroke:#78716c}
.chart .tick,.chart .axislabel{font-size:11px;fill:#57534e}
.chart .label{font-size:12px;fill:#1c1917;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
.chart .anchor .label{font-style:italic}
.chart .value,.chart .tick{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
.chart .value{font-size:11px;fill:#44403c}
.chart .tlabel{font-size:10.5px;font-family:ui-monospace,"DejaVu Sans Mono",monospace}
.chartkeys{display:flex;flex-wrap:wrap;gap:4px 16px;margin:6px 0;font-size:12.5px}
.chartkeys .swatch.ref{background:none;width:14px;height:0;border-top:2px dashed;border-radius:0;vertical-align:middle}
.better{font-weight:400;color:var(--muted);font-size:11px}
.chart .whisker{stroke:#292524;stroke-width:1.4}
.chart .ref{stroke-width:1.6;stroke-dasharray:5 3}
.ratios{margin:4px 0}
ol.rows{padding-left:22px}
ol.rows li{margin:6px 0}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#fafaf9;border:1px solid var(--line);border-radius:4px;padding:6px 8px;margin:4px 0;font-size:12.5px}
.notes li{margin:2px 0}
.two{display:flex;flex-wrap:wrap;gap:40px}
code{font-size:12.5px}
@media print{nav{display:none}.matrix thead th{position:static}}
`.trim();
