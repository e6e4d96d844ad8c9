/** `fdbridge log [--transport T] [--socket PATH] [--logfile SPEC] LINE...`: the log command from the command line. */
import { connect, transportNames, type TransportName } from '../../src';
import { LOG_COMMAND, logRedirectOption } from '../../src/commands/log-command';
import { EXIT, parseSubcommandArgs, UsageError } from './usage';

export const USAGE = `log [--transport T] [--socket PATH] [--logfile [!]PATH | - | -stdout | -stderr] [--] LINE...
      Start the log command on a transport, redirect its log to a file this process opens (the
      fd is duplicated into the command), and log each LINE there.

  --transport T      ${transportNames().join(', ')} (default: child)
  --socket PATH      the helper daemon's socket (--transport helper)
  --logfile SPEC     PATH appends, !PATH truncates first, - and -stdout mean stdout, -stderr stderr
                     (default: the command's own stderr)

exit status: 0 logged; 2 usage error; 3 error (e.g. the file cannot be opened, no helper daemon).`;

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseSubcommandArgs(
    argv,
    { transport: { type: 'string', default: 'child' }, socket: { type: 'string' }, logfile: { type: 'string' } },
    { positionals: true },
  );
  const transport = values.transport as TransportName;
  if (!transportNames().includes(transport)) throw new UsageError(`--transport must be one of ${transportNames().join(', ')}, not ${transport}`);
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
  return EXIT.ok;
}
