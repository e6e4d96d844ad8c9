/**
 * The bench's HTML page (`fdbridge bench --html FILE`): the same figures as
 * its text report, with the throughput curve drawn. Self-contained as
 * report/index.html is (inline CSS and SVG, a Content-Security-Policy that
 * lets nothing load), with its style and escaping.
 */
import type { BenchFile, Ratio } from './cli/bench';
import { esc, formatUs, htmlPage } from './report-html';
import type { ThroughputMode, ThroughputPoint, ThroughputServer } from './throughput';
import type { Latency } from './types';
import { writeFileAtomic } from './write-file';

function num(n: number | undefined, digits = 2): string {
  if (n === undefined || !Number.isFinite(n)) return '—';
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(digits);
}

function row(cells: readonly string[], head = false): string {
  const [first, ...rest] = cells;
  return `<tr><th>${first ?? ''}</th>${rest.map((c) => (head ? `<th>${c}</th>` : `<td>${c}</td>`)).join('')}</tr>`;
}

function dataTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  return `<div class="tablebox"><table class="data"><thead>${row(header, true)}</thead><tbody>${rows.map((r) => row(r)).join('')}</tbody></table></div>`;
}

function latencyCells(l: Latency | undefined): string[] {
  return [formatUs(l?.p50Us), formatUs(l?.p99Us), formatUs(l?.meanUs), num(l?.samples, 0)];
}

function renderLatency(file: BenchFile): string {
  const rows: string[][] = [];
  for (const a of file.anchors) {
    const same = a.sameCpuFraction !== undefined ? ` (${Math.round(a.sameCpuFraction * 100)}% same CPU)` : '';
    rows.push([`anchor ${esc(a.name)}${same}`, ...latencyCells(a.latency), a.fdsPerMessage > 1 ? num(a.latency.opsPerSec * a.fdsPerMessage, 0) : '—', '—']);
  }
  for (const t of file.transports) {
    if (t.error !== undefined || t.skipped !== undefined) {
      rows.push([esc(t.transport), `${t.error !== undefined ? 'failed' : 'skipped'}: ${esc(t.error ?? t.skipped)}`, '', '', '', '', '']);
      continue;
    }
    const same = t.sameCpuFraction !== undefined ? ` (${Math.round(t.sameCpuFraction * 100)}% same CPU)` : '';
    const sync = t.syncLatency ? `${formatUs(t.syncLatency.p50Us)} / ${formatUs(t.syncLatency.p99Us)}` : '—';
    rows.push([`${esc(t.transport)}${same}`, ...latencyCells(t.latency), num(t.batch?.fdsPerSec, 0), sync]);
  }
  return `<h2 id="latency">Round trips</h2>${dataTable(['', 'p50', 'p99', 'mean', 'samples', `fds/s @${file.options.fdsPerMessage}`, 'dupFileDescriptorSync p50 / p99'], rows)}`;
}

function renderGoals(ratios: readonly Ratio[]): string {
  const rows = ratios.map((r) => {
    const digits = r.goal === 'batchFdsPerSec' ? 0 : 2;
    const verdict = r.met === null ? '<span class="mark skip">info</span>' : r.met ? '<span class="mark pass">met</span>' : '<span class="mark fail">not met</span>';
    return [
      esc(r.description),
      num(r.value, digits),
      r.p99 ? num(r.p99.value, digits) : '—',
      `${esc(r.comparison)} ${r.target < 10 ? String(r.target) : num(r.target, 0)}`,
      verdict,
      esc(r.rounds.map((v) => num(v, digits)).join(' ')),
      esc(r.p99?.rounds.map((v) => num(v, digits)).join(' ') ?? ''),
    ];
  });
  return (
    '<h2 id="goals">Goals</h2><p class="muted">Each value is the median of the per-round ratios; "at p99" is the same ratio with every latency taken at its p99 (a rate as 1e6 / p99). Judged at p50.</p>' +
    dataTable(['goal', 'value', 'at p99', 'target', '', 'per round', 'per round at p99'], rows)
  );
}

const SERIES: ReadonlyArray<{ server: ThroughputServer; mode: ThroughputMode; colour: string; dash: boolean; label: string }> = [
  { server: 'helper', mode: 'dup', colour: '#1d4ed8', dash: false, label: 'helper dups/s' },
  { server: 'c-frame-server', mode: 'dup', colour: '#1d4ed8', dash: true, label: 'C frame server dups/s' },
  { server: 'helper', mode: 'call', colour: '#b45309', dash: false, label: 'helper calls/s' },
  { server: 'c-frame-server', mode: 'call', colour: '#b45309', dash: true, label: 'C frame server calls/s' },
];

/** Requests/s against concurrent clients (log2 axis), one line per server and mode. */
function renderCurveChart(clients: readonly number[], points: readonly ThroughputPoint[]): string {
  const W = 640;
  const H = 320;
  const left = 70;
  const right = W - 20;
  const top = 20;
  const bottom = H - 40;
  const maxRate = Math.max(1, ...points.map((p) => p.opsPerSec));
  const lo = Math.log2(Math.min(...clients));
  const hi = Math.log2(Math.max(...clients));
  const x = (c: number): number => (hi === lo ? (left + right) / 2 : left + ((Math.log2(c) - lo) / (hi - lo)) * (right - left));
  const y = (v: number): number => bottom - (v / maxRate) * (bottom - top);
  const parts: string[] = [];
  for (let k = 0; k <= 4; k++) {
    const v = (maxRate * k) / 4;
    parts.push(`<line class="grid" x1="${left}" x2="${right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/>`);
    parts.push(`<text class="tick" x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${esc(num(v, 0))}</text>`);
  }
  for (const c of clients) parts.push(`<text class="tick" x="${x(c).toFixed(1)}" y="${bottom + 16}" text-anchor="middle">${c}</text>`);
  parts.push(`<text class="axislabel" x="${(left + right) / 2}" y="${H - 6}" text-anchor="middle">concurrent clients (one request in flight each)</text>`);
  parts.push(`<line class="axis" x1="${left}" x2="${right}" y1="${bottom}" y2="${bottom}"/><line class="axis" x1="${left}" x2="${left}" y1="${top}" y2="${bottom}"/>`);
  for (const s of SERIES) {
    const pts = clients
      .map((c) => points.find((p) => p.server === s.server && p.mode === s.mode && p.clients === c))
      .filter((p): p is ThroughputPoint => p !== undefined);
    if (pts.length === 0) continue;
    const d = pts.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(p.clients).toFixed(1)},${y(p.opsPerSec).toFixed(1)}`).join(' ');
    parts.push(`<path d="${d}" fill="none" stroke="${s.colour}" stroke-width="2"${s.dash ? ' stroke-dasharray="6 4"' : ''}/>`);
    for (const p of pts) {
      parts.push(`<circle cx="${x(p.clients).toFixed(1)}" cy="${y(p.opsPerSec).toFixed(1)}" r="3" fill="${s.colour}"><title>${esc(`${s.label}, ${p.clients} clients: ${num(p.opsPerSec, 0)} (p50 ${formatUs(p.p50Us)}, p99 ${formatUs(p.p99Us)})`)}</title></circle>`);
    }
  }
  const keys = SERIES.map(
    (s) => `<span><span class="swatch${s.dash ? ' ref' : ''}" style="${s.dash ? `border-color:${s.colour}` : `background:${s.colour}`}"></span>${esc(s.label)}</span>`,
  ).join('');
  return `<div class="chartkeys">${keys}</div><div class="chartbox"><svg class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="throughput against concurrent clients">${parts.join('')}</svg></div>`;
}

function renderThroughput(file: BenchFile): string {
  const t = file.throughput;
  if (!t) return '';
  const head = '<h2 id="throughput">Helper throughput against concurrent clients</h2>';
  if (t.error !== undefined) return `${head}<p>Not measured: ${esc(t.error)}</p>`;
  const rows: string[][] = [];
  for (const mode of ['dup', 'call'] as const) {
    for (const clients of t.clients) {
      const h = t.points.find((p) => p.server === 'helper' && p.mode === mode && p.clients === clients);
      const c = t.points.find((p) => p.server === 'c-frame-server' && p.mode === mode && p.clients === clients);
      rows.push([
        `${mode === 'dup' ? 'dups' : 'calls'}/s, ${clients} client${clients === 1 ? '' : 's'}`,
        num(h?.opsPerSec, 0),
        num(c?.opsPerSec, 0),
        h && c ? num(h.opsPerSec / c.opsPerSec) : '—',
        `${formatUs(h?.p50Us)} / ${formatUs(h?.p99Us)}`,
        `${formatUs(c?.p50Us)} / ${formatUs(c?.p99Us)}`,
      ]);
    }
  }
  return (
    `${head}<p class="muted">One C load generator (native/bench/frame_bench.c) drives the helper daemon and a C epoll server that serves the same frames; each client keeps one request in flight. Median of ${file.options.rounds} rounds.</p>` +
    renderCurveChart(t.clients, t.points) +
    dataTable(['', 'helper', 'C server', 'helper / C', 'helper p50 / p99', 'C p50 / p99'], rows)
  );
}

/** The whole page; pure, so the same bench file gives the same bytes. */
export function renderBenchHtml(file: BenchFile): string {
  const e = file.environment;
  const load = (l: number[]): string => l.map((v) => v.toFixed(2)).join(' ');
  const runLine =
    `node ${e.node}, Linux ${e.kernel}, ${e.cpuModel} × ${e.cores}, commit ${e.gitCommit.slice(0, 12)}; ` +
    `load average ${load(file.loadAverage.start)} → ${load(file.loadAverage.end)}; CPUs allowed ${file.cpusAllowed}; ` +
    `${file.options.timeMs} ms per measurement over ${file.options.rounds} rounds`;
  return htmlPage(`fdbridge bench: ${e.gitCommit.slice(0, 12)}`, [
    `<header><h1>fdbridge bench</h1><p class="runline">${esc(runLine)}</p></header>`,
    '<main>',
    renderGoals(file.ratios),
    renderThroughput(file),
    renderLatency(file),
    '</main>',
  ]);
}

/** Writes the page to `path` (its directory created; an old page replaced atomically). */
export function writeBenchHtml(path: string, file: BenchFile): void {
  writeFileAtomic(path, renderBenchHtml(file));
}
