/**
 * What a result was measured on. Benchmark numbers mean little without the
 * machine, and nothing across machines: results.json and `fdbridge bench`
 * record this beside every run so that a reader can tell two runs apart.
 */
import { execFileSync } from 'node:child_process';
import { cpus, hostname, release } from 'node:os';

import { packageRoot } from '../src/paths';
import type { Environment } from './types';

/** HEAD of the checkout the harness runs from, `+dirty` when tracked files differ; 'unknown' outside git. */
function gitCommit(): string {
  const git = (args: string[]): string =>
    execFileSync('git', args, { cwd: packageRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim();
  try {
    const head = git(['rev-parse', 'HEAD']);
    // Untracked files (other people's work in progress) do not make the
    // measured code differ; modified tracked files do.
    const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
    return dirty ? `${head}+dirty` : head;
  } catch {
    return 'unknown';
  }
}

/**
 * Node version, kernel release, CPU model, core count, git commit, platform,
 * host name and the current time (ISO 8601).
 */
export function collectEnvironment(): Environment {
  const cpu = cpus();
  return {
    node: process.version,
    kernel: release(),
    cpuModel: cpu[0]?.model.trim() ?? 'unknown',
    cores: cpu.length,
    gitCommit: gitCommit(),
    platform: `${process.platform}-${process.arch}`,
    hostname: hostname(),
    date: new Date().toISOString(),
  };
}
