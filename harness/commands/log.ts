/** `fdbridge log [--transport T] [--socket PATH] [--logfile SPEC] LINE...`: the seed's log command. */
import { parseArgs } from 'node:util';

import { connect, transportNames, type TransportName } from '../../src';
import { LOG_COMMAND, logRedirectOption } from '../../src/commands/log-command';
import { UsageError } from './usage';

/**
 * `--logfile -stderr`: its values start with a dash, which parseArgs would
 * take for an option; join each `--logfile` with the word after it.
 */
function joinLogfileValue(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--logfile' && i + 1 < argv.length) out.push(`--logfile=${argv[++i]}`);
    else out.push(a);
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: joinLogfileValue(argv),
    options: { transport: { type: 'string', default: 'child' }, socket: { type: 'string' }, logfile: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  const transport = values.transport as TransportName;
  if (!transportNames().includes(transport)) throw new UsageError(`--transport must be one of ${transportNames().join(', ')}`);
  const conn = await connect(transport, {
    command: LOG_COMMAND,
    ...(values.socket !== undefined ? { socketPath: values.socket } : {}),
  });
  try {
    if (values.logfile !== undefined) await logRedirectOption(conn, values.logfile);
    for (const line of positionals) await conn.call('log', line);
  } finally {
    await conn.close();
  }
  return 0;
}

