/** `fdbridge helper [--socket PATH] [--allow-uid UID[,UID...]] [--verbose]`: run a helper daemon. */
import { parseArgs } from 'node:util';

import { HelperDaemon } from '../../src/transports/helper-daemon';
import { UsageError } from './usage';

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { socket: { type: 'string' }, 'allow-uid': { type: 'string' }, verbose: { type: 'boolean' } },
    strict: true,
  });
  const allowUids = (values['allow-uid'] ?? '')
    .split(',')
    .filter((s) => s !== '')
    .map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`--allow-uid: ${s} is not a uid`);
      return n;
    });
  const daemon = HelperDaemon.start({
    ...(values.socket !== undefined ? { socketPath: values.socket } : {}),
    allowUids,
    log: values.verbose ? (line) => process.stderr.write(`fdbridge helper: ${line}\n`) : undefined,
  });
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals): void => {
      process.stderr.write(`fdbridge helper: ${signal}: closing\n`);
      daemon.close().finally(resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  // Announce only once the signal handlers are in place.
  process.stdout.write(`fdbridge helper listening on ${daemon.socketPath} (pid ${process.pid})\n`);
  await stopped;
  return 0;
}

