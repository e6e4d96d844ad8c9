/**
 * The relay benchmark's far-side command: writes a number of bytes into a
 * relayed fd from a process of its own (`head -c N /dev/zero`), as a remote
 * program writing its output would.
 */
import { spawn } from 'node:child_process';

import type { CommandContext, ModuleCommandSpec } from '../src/command';
import { closeFd } from '../src/fd';
import { distPath } from '../src/paths';

export class RelayBenchCommand {
  readonly context: CommandContext;

  constructor(context: CommandContext) {
    this.context = context;
  }

  /** Adopts `fd`, has `head` write `bytes` zero bytes into it, closes it; resolves once head has exited. */
  pump(fd: number, bytes: number): Promise<number> {
    this.context.adoptFd(fd);
    let child;
    try {
      child = spawn('head', ['-c', String(bytes), '/dev/zero'], { stdio: ['ignore', fd, 'ignore'] });
    } finally {
      // head has its own copy (its stdout): ours would hold the reader's end of file back.
      closeFd(fd);
    }
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => (code === 0 ? resolve(bytes) : reject(new Error(`head exited with ${code ?? signal}`))));
    });
  }
}

export const RELAY_BENCH_COMMAND: ModuleCommandSpec = {
  name: 'relay-bench',
  module: distPath('harness/bench-relay-command.js'),
  export: 'RelayBenchCommand',
};
