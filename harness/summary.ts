/**
 * Terminal output of `fdbridge run`: one progress line per row, and the
 * scenarios x transports matrix at the end. Plain text, no colour: it goes
 * into CI logs. Scenario names as terminalName shows them.
 */
import { describeFdOrigin } from '../src/fd-track';
import type { ResultRow, ResultsFile, Status } from './types';

const LABEL: Record<Status, string> = { pass: 'pass', fail: 'FAIL', skip: 'skip', 'expected-fail': 'xfail' };

/** A character a terminal does not show as itself: a control, format, private-use, unassigned or surrogate code point, a line or paragraph separator, a space other than U+0020. */
const UNSEEN = /[\p{C}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;

/**
 * A scenario's name as the terminal output shows it: as it is when every
 * character shows as itself, it is not empty, does not start with `"` and
 * neither starts nor ends with a space; else as a JSON
 * string (in double quotes, `\n`, `\"`, `\\`, `\u001b`, ...), so that an
 * ANSI sequence, a newline or a bidi override in a name can neither forge
 * nor hide a line, and the shown text names one name only (JSON.parse gives
 * it back). `run --scenario-name` takes either form.
 */
export function terminalName(name: string): string {
  if (!UNSEEN.test(name) && !/^$|^["\s]|\s$/.test(name)) return name;
  let out = '"';
  for (const ch of name) {
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (UNSEEN.test(ch)) for (let i = 0; i < ch.length; i++) out += `\\u${ch.charCodeAt(i).toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

function padLeft(s: string, n: number): string {
  return s.length >= n ? s : ' '.repeat(n - s.length) + s;
}

/** `[  3/40] FAIL   dup-pipe            child      123 ms  leaks 2`, then the error and leaks, indented. */
export function progressLine(r: ResultRow, index: number, total: number, nameWidth = 36): string {
  const w = String(total).length;
  const head = `[${padLeft(String(index + 1), w)}/${total}] ${pad(LABEL[r.status], 5)} ${pad(terminalName(r.scenario), nameWidth)} ${pad(r.transport, 7)} ${padLeft(
    String(r.durationMs ?? 0),
    6,
  )} ms  leaks ${r.leaks.length}${r.iteration && r.iteration > 1 ? `  (pass ${r.iteration})` : ''}`;
  const lines = [head];
  if (r.status === 'fail' || r.status === 'skip') {
    for (const line of (r.error ?? '').split('\n').slice(0, 6)) if (line) lines.push(`        ${line}`);
  }
  // --track-fds: who opened each leaked fd, declared or not.
  for (const l of r.leaks) {
    if (!l.openedAt) continue;
    lines.push(`        fd ${l.fd} -> ${l.target} (pid ${l.pid}, ${l.role})`, ...describeFdOrigin(l.openedAt, '          '));
  }
  return lines.join('\n');
}

interface Cell {
  n: number;
  fails: number;
  skips: number;
  xfails: number;
  leaks: number;
  p50: number[];
}

function label(c: Cell | undefined): string {
  if (!c) return '-';
  const leaks = c.leaks > 0 ? ` ${c.leaks}L` : '';
  if (c.fails > 0) return `FAIL${c.n > 1 ? ` ${c.fails}/${c.n}` : ''}${leaks}`;
  if (c.skips === c.n) return 'skip';
  if (c.xfails > 0) return `xfail${leaks}`;
  return `pass${leaks}`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] as number;
}

function formatUs(us: number): string {
  return us >= 100 ? us.toFixed(0) : us >= 10 ? us.toFixed(1) : us.toFixed(2);
}

/**
 * The scenarios x transports matrix (pass / FAIL / skip / xfail, `nL` =
 * n leaked fds, `k/n` = failed in k of n passes), a p50 latency matrix when
 * benched, the anchors, and a totals line.
 */
export function summaryTable(file: ResultsFile, elapsedMs?: number): string {
  const rows = file.results;
  const transports = [...new Set([...file.options.transports, ...rows.map((r) => r.transport)])].filter((t) =>
    rows.some((r) => r.transport === t),
  );
  const scenarios = [...new Set(rows.map((r) => r.scenario))].sort();
  const cells = new Map<string, Cell>();
  for (const r of rows) {
    const k = `${r.scenario}\0${r.transport}`;
    const c = cells.get(k) ?? { n: 0, fails: 0, skips: 0, xfails: 0, leaks: 0, p50: [] };
    c.n++;
    if (r.status === 'fail') c.fails++;
    if (r.status === 'skip') c.skips++;
    if (r.status === 'expected-fail') c.xfails++;
    c.leaks += r.leaks.length;
    if (r.latency) c.p50.push(r.latency.p50Us);
    cells.set(k, c);
  }
  const nameWidth = Math.max(8, ...scenarios.map((s) => terminalName(s).length)) + 2;
  const colWidth = Math.max(9, ...transports.map((t) => t.length + 2));
  const out: string[] = [];
  const table = (title: string, cell: (c: Cell | undefined) => string, only = scenarios): void => {
    out.push(pad(title, nameWidth) + transports.map((t) => pad(t, colWidth)).join('').trimEnd());
    for (const s of only) {
      out.push(pad(terminalName(s), nameWidth) + transports.map((t) => pad(cell(cells.get(`${s}\0${t}`)), colWidth)).join('').trimEnd());
    }
  };
  table('scenario', label);
  if (rows.some((r) => r.latency)) {
    out.push('');
    const benched = scenarios.filter((s) => rows.some((r) => r.scenario === s && r.latency));
    table('p50 (µs)', (c) => (c && c.p50.length > 0 ? formatUs(median(c.p50)) : '-'), benched);
  }
  for (const a of file.anchors) {
    out.push(`anchor ${a.name}: p50 ${formatUs(a.latency.p50Us)} µs, p99 ${formatUs(a.latency.p99Us)} µs, ${Math.round(a.latency.opsPerSec)} ops/s`);
  }
  const count = (s: Status): number => rows.filter((r) => r.status === s).length;
  // A 'leak' scenario's leaks are declared; anyone else's are not.
  const undeclared = rows.filter((r) => r.expect !== 'leak').reduce((n, r) => n + r.leaks.length, 0);
  out.push('');
  out.push(
    `${rows.length} rows: ${count('pass')} pass, ${count('fail')} FAIL, ${count('skip')} skip, ${count('expected-fail')} xfail (expected failures); ` +
      `undeclared leaks ${undeclared}; seed ${file.options.seed}${elapsedMs !== undefined ? `; ${(elapsedMs / 1000).toFixed(1)} s` : ''}`,
  );
  const totals = totalsLine(file.totals);
  if (totals) out.push(totals);
  return out.join('\n');
}

/**
 * `totals: faults injected 14, survived 14; bad inputs tried 0, rejected 0;
 * replies lost 0, duplicated 0; fds leaked 0; peak RSS client 98 MB, helper 61 MB`,
 * or '' when the file has no totals.
 */
export function totalsLine(totals: Record<string, number> | undefined): string {
  if (!totals) return '';
  const n = (k: string): string => String(totals[k] ?? 0);
  const mb = (k: string): string | undefined => (totals[k] === undefined ? undefined : `${((totals[k] as number) / 2 ** 20).toFixed(0)} MB`);
  const rss = [
    ['client', mb('clientPeakRssBytes')],
    ['helper', mb('helperPeakRssBytes')],
  ].filter((x): x is [string, string] => x[1] !== undefined);
  return (
    `totals: faults injected ${n('faultsInjected')}, survived ${n('faultsSurvived')}; ` +
    `bad inputs tried ${n('badInputsTried')}, rejected ${n('badInputsRejected')}; ` +
    `replies lost ${n('repliesLost')}, duplicated ${n('repliesDuplicated')}; fds leaked ${n('leakedFds')}` +
    (rss.length > 0 ? `; peak RSS ${rss.map(([who, v]) => `${who} ${v}`).join(', ')}` : '')
  );
}
