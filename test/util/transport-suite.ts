/**
 * The set-up shared by the suites that run once per transport: the
 * transports, and the connections one test opens, closed and checked after
 * it (the global check of this process's fd table is test/setup/fd-table.ts).
 */
import { connect, PROBE_COMMAND, type Connection, type ConnectOptions, type TransportName } from '../../src';
import { openFdTable, type FdTable } from '../../src/fd';
import type { ChildConnection } from '../../src/transports/child';
import { exitOf, fdTableSettles, type HelperProcess } from './processes';

export const TRANSPORTS: TransportName[] = ['direct', 'worker', 'child', 'helper', 'pidfd'];
/** Transports whose command runs in a process spawned for the connection. */
export const SPAWNED = new Set<TransportName>(['child', 'pidfd']);

export interface TestConnections {
  /** Connects with the probe command (to the suite's helper daemon for 'helper'), unless `options` say otherwise. */
  open(options?: Partial<ConnectOptions>): Promise<Connection>;
  /** Connections whose command process the test SIGKILLs on purpose. */
  readonly killed: WeakSet<Connection>;
}

/**
 * Call inside a transport's describe block. After each test, every
 * connection `open` made is closed; a spawned command process must then
 * end cleanly (exit code 0, no signal) unless the test put it in `killed`,
 * and the helper daemon's fd table must return to what it was before the
 * test.
 */
export function connectionsPerTest(
  transport: TransportName,
  suite: { readonly helper: HelperProcess; readonly socketPath: string },
): TestConnections {
  const opened: Connection[] = [];
  const killed = new WeakSet<Connection>();
  let helperBaseline: FdTable | undefined;

  beforeEach(() => {
    helperBaseline = transport === 'helper' ? openFdTable(suite.helper.pid) : undefined;
  });

  afterEach(async () => {
    for (const conn of opened.splice(0)) {
      await conn.close();
      if (SPAWNED.has(transport)) {
        const exit = await exitOf((conn as ChildConnection).child);
        expect(exit).toEqual(killed.has(conn) ? { code: null, signal: 'SIGKILL' } : { code: 0, signal: null });
      }
    }
    if (helperBaseline) expect(await fdTableSettles(suite.helper.pid, helperBaseline)).toBe('');
  });

  return {
    async open(options: Partial<ConnectOptions> = {}): Promise<Connection> {
      const conn = await connect(transport, { command: PROBE_COMMAND, socketPath: suite.socketPath, ...options });
      opened.push(conn);
      return conn;
    },
    killed,
  };
}
