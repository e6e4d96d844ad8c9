/**
 * `fdbridge compare OLD.json NEW.json [--threshold R]`: what changed between
 * two runs. Regressions (exit status 1): a row that started failing, a row
 * with more undeclared leaks than before, a row whose p50 latency grew by
 * the threshold ratio or more (default 1.25). Reported without failing:
 * rows that got faster or were fixed, rows now skipped, rows missing from
 * one side (a filter or shard difference is not a regression), and the
 * anchors' own drift, which says how much of a slowdown is the machine.
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync } from 'node:fs';

import type { ResultRow, ResultsFile, Status } from '../types';
import { EXIT, parseSubcommandArgs, UsageError } from './usage';

export const USAGE = `compare OLD.json NEW.json [--threshold RATIO]
      Compare two results files of \`fdbridge run --json\`: rows that started failing or
      leaking, rows slower by RATIO (p50 latency, with --bench) or faster, rows missing or new,
      and how the anchors (the machine itself) moved.

  --threshold RATIO   a row is slower when its p50 grew by this factor (default 1.25; > 1)

exit status: 0 nothing regressed; 1 a row regressed (started failing or leaking, or got
slower); 2 usage error; 3 a file cannot be read or is not a results file.`;

/** One scenario on one transport, folded over --repeat passes. */
interface Folded {
  key: string;
  status: Status;
  /** Leaks of rows whose scenario does not declare a leak. */
  undeclaredLeaks: number;
  p50Us?: number;
  error?: string;
}

const RANK: Record<Status, number> = { fail: 3, 'expected-fail': 2, pass: 1, skip: 0 };

function fold(rows: readonly ResultRow[]): Map<string, Folded> {
  const groups = new Map<string, ResultRow[]>();
  for (const r of rows) {
    const key = `${r.scenario} on ${r.transport}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const out = new Map<string, Folded>();
  for (const [key, rs] of groups) {
    // The worst status of any pass; the median p50 of the passes that have one.
    const worst = rs.reduce((a, b) => (RANK[b.status] > RANK[a.status] ? b : a));
    const p50s = rs.flatMap((r) => (r.latency ? [r.latency.p50Us] : [])).sort((a, b) => a - b);
    out.set(key, {
      key,
      status: worst.status,
      undeclaredLeaks: rs.filter((r) => r.expect !== 'leak').reduce((n, r) => n + (r.leaks?.length ?? 0), 0),
      ...(p50s.length > 0 ? { p50Us: p50s[Math.floor((p50s.length - 1) / 2)] as number } : {}),
      ...(worst.error !== undefined ? { error: worst.error } : {}),
    });
  }
  return out;
}

/**
 * Reads a results file; throws (exit status 3) when it cannot be read, is
 * not a regular file (a device or FIFO may never end: /dev/zero), or has no
 * "results" array.
 */
export function readResults(path: string): ResultsFile {
  let parsed: unknown;
  try {
    // Non-blocking: opening a FIFO nobody writes to would wait for a writer.
    const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    try {
      if (!fstatSync(fd).isFile()) throw new Error('not a regular file');
      parsed = JSON.parse(readFileSync(fd, 'utf8'));
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (typeof parsed !== 'object' || parsed === null || !Array.isArray((parsed as ResultsFile).results)) {
    throw new Error(`${path} is not a results file (no "results" array)`);
  }
  return parsed as ResultsFile;
}

const us = (x: number): string => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const firstLine = (s: string | undefined): string => (s ?? '').split('\n')[0] ?? '';

export interface Comparison {
  regressions: string[];
  lines: string[];
}

/** The comparison as lines of text, and which of them are regressions. */
export function compareResults(old: ResultsFile, now: ResultsFile, threshold = 1.25): Comparison {
  const a = fold(old.results);
  const b = fold(now.results);
  const sections: Record<string, string[]> = {
    'started failing': [],
    'started leaking': [],
    [`slower (p50 x${threshold} or more)`]: [],
    [`faster (p50 x${(1 / threshold).toFixed(2)} or less)`]: [],
    fixed: [],
    'now skipped': [],
    'missing from NEW': [],
    'new in NEW': [],
  };
  const regressions: string[] = [];
  const [failing, leaking, slower, faster, fixed, skipped, missing, added] = Object.values(sections) as string[][];
  for (const [key, o] of a) {
    const n = b.get(key);
    if (!n) {
      missing!.push(`${key} (was ${o.status})`);
      continue;
    }
    if (n.status === 'fail' && o.status !== 'fail') {
      failing!.push(`${key}: ${o.status} -> FAIL: ${firstLine(n.error)}`);
    } else if (o.status === 'fail' && n.status !== 'fail') {
      fixed!.push(`${key}: FAIL -> ${n.status}`);
    } else if (n.status === 'skip' && o.status !== 'skip') {
      skipped!.push(`${key}: ${o.status} -> skip: ${firstLine(n.error)}`);
    }
    if (n.undeclaredLeaks > o.undeclaredLeaks) {
      leaking!.push(`${key}: ${o.undeclaredLeaks} -> ${n.undeclaredLeaks} undeclared leaked fd(s)`);
    }
    if (o.p50Us !== undefined && n.p50Us !== undefined && o.p50Us > 0) {
      const ratio = n.p50Us / o.p50Us;
      const line = `${key}: p50 ${us(o.p50Us)} -> ${us(n.p50Us)} µs (x${ratio.toFixed(2)})`;
      if (ratio >= threshold) slower!.push(line);
      else if (ratio <= 1 / threshold) faster!.push(line);
    }
  }
  for (const [key, n] of b) if (!a.has(key)) added!.push(`${key} (${n.status})`);
  regressions.push(...failing!, ...leaking!, ...slower!);

  const lines: string[] = [];
  const describe = (f: ResultsFile): string =>
    `${(f.environment?.gitCommit ?? 'unknown').slice(0, 12)} ${f.environment?.date ?? ''} (${f.results.length} rows)`;
  lines.push(`OLD ${describe(old)}`);
  lines.push(`NEW ${describe(now)}`);
  if (old.environment && now.environment) {
    for (const k of ['node', 'kernel', 'cpuModel', 'cores'] as const) {
      if (old.environment[k] !== now.environment[k]) {
        lines.push(`note: ${k} differs (${String(old.environment[k])} -> ${String(now.environment[k])}); latency may not compare`);
      }
    }
  }
  for (const [title, items] of Object.entries(sections)) {
    if (items.length === 0) continue;
    items.sort();
    lines.push('', `${title} (${items.length}):`, ...items.map((i) => `  ${i}`));
  }
  const oldAnchors = new Map((old.anchors ?? []).map((x) => [x.name, x.latency]));
  const drift = (now.anchors ?? []).flatMap((x) => {
    const o = oldAnchors.get(x.name);
    return o && o.p50Us > 0 ? [`  ${x.name}: p50 ${us(o.p50Us)} -> ${us(x.latency.p50Us)} µs (x${(x.latency.p50Us / o.p50Us).toFixed(2)})`] : [];
  });
  if (drift.length > 0) lines.push('', 'anchors (the machine itself; not counted as regressions):', ...drift);
  lines.push('', regressions.length > 0 ? `REGRESSED: ${regressions.length} row(s)` : 'no regressions');
  return { regressions, lines };
}

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseSubcommandArgs(argv, { threshold: { type: 'string', default: '1.25' } }, { positionals: true });
  if (positionals.length !== 2) throw new UsageError(`compare needs two files, OLD.json and NEW.json (got ${positionals.length})`);
  const threshold = Number(values.threshold);
  if (!Number.isFinite(threshold) || threshold <= 1) throw new UsageError(`--threshold must be a ratio > 1, not ${values.threshold}`);
  const [oldPath, newPath] = positionals as [string, string];
  const { regressions, lines } = compareResults(readResults(oldPath), readResults(newPath), threshold);
  process.stdout.write(`${lines.join('\n')}\n`);
  return regressions.length > 0 ? EXIT.failed : EXIT.ok;
}
