/**
 * `fdbridge serve --stdio`: the command's side of a 'remote' connection,
 * on this process's stdin and stdout. The client starts it through its
 * `via` (`ssh HOST -- fdbridge serve --stdio`, `docker exec -i CTR ...`);
 * nobody runs it by hand.
 */
import { serveStdio } from '../../src/transports/remote-serve';
import { parseCommands } from './helper';
import { EXIT, parseSubcommandArgs, UsageError } from './usage';

export const USAGE = `serve --stdio [--command NAME=MODULE[#EXPORT]]... [--verbose]
      Serve one remote connection on stdin and stdout: the far side of connect('remote',
      { via, command }), started by the client through via (ssh, docker exec -i, kubectl
      exec -i, ...). Hosts the command the client names; relays the byte streams of the fds
      it duplicates. Exits when stdin ends (the client closed, or the channel was lost),
      after the command's close() ran and every fd given to it and not adopted was closed.

  --stdio            required: the channel is this process's stdin and stdout
  --command NAME=MODULE[#EXPORT]
                     also serve the command class EXPORT (default: default) of MODULE under
                     NAME; repeatable. Built in: log, probe
  --verbose          say on stderr why the channel ended, when it was not the client closing

exit status: 0 the channel ended; 2 usage error; 3 stdin or stdout cannot carry the channel.`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parseSubcommandArgs(argv, {
    stdio: { type: 'boolean' },
    command: { type: 'string', multiple: true },
    verbose: { type: 'boolean' },
  });
  if (!values.stdio) throw new UsageError('--stdio is required (the only channel there is)');
  const commands = parseCommands(values.command ?? []);
  await serveStdio({
    commands,
    ...(values.verbose ? { log: (line: string) => process.stderr.write(`fdbridge serve: ${line}\n`) } : {}),
  });
  return EXIT.ok;
}
