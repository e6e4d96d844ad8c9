/**
 * fdbridge: pass file descriptors between execution contexts on one machine.
 *
 *     import { connect, LOG_COMMAND } from 'fdbridge';
 *     const conn = await connect('child', { command: LOG_COMMAND });
 *     const remoteFd = await conn.dupFileDescriptor(fd); // valid in the child
 */
export { connect, transportNames, type TransportName } from './transports';
export { CAPABILITIES, missingCapabilities, transportCapabilities } from './capabilities';
export type { Capability } from './capabilities';
export type { Connection, ConnectOptions, CommandLocation } from './connection';
export { CALL_TOO_LARGE, MAX_CALL_JSON_BYTES } from './json-value';
export type { CommandContext, CommandClass, CommandSpec, PeerCredentials, Remote } from './command';
export {
  ClosedError,
  EofError,
  FdBridgeError,
  isFdBridgeError,
  PeerExitedError,
  PeerGoneError,
  PeerRefusedError,
  UnknownCommandError,
  QuotaExceededError,
  ProtocolError,
  QueueFullError,
  RemoteError,
  SystemError,
  TimeoutError,
  TruncatedError,
  UnsupportedError,
} from './errors';
export type { PeerExit, QuotaName, RemoteErrorInfo } from './errors';
export {
  closeFd,
  closeFds,
  diffFdTables,
  dupFd,
  fdFlags,
  fdIdentity,
  fdFloor,
  fdLimit,
  FdTableHold,
  formatFdTableDiff,
  makeEventfd,
  makeMemfd,
  makePipe,
  openFdTable,
  openPidfd,
  OwnedFd,
  sameFile,
  setFdFlags,
  setFdLimit,
} from './fd';
export type { FdFlags, FdIdentity, FdTable, FdTableDiff, FileType } from './fd';
export { isRelativeSenderName, UnixServer, UnixSocket } from './socket';
export type { Credentials, Message, ReceiveOptions, RelativeSenderName, SenderAddress, SocketAddress, SocketKind, UnixSocketOptions, ListenOptions, WhenFull, CloseOptions } from './socket';
export { DatagramSocket } from './datagram';
export type { Datagram, DatagramBindOptions, DatagramHandler, DatagramSocketOptions, SendToOptions } from './datagram';
export { HelperDaemon, defaultHelperSocketPath, DEFAULT_HELPER_LIMITS } from './transports/helper-daemon';
export type { HelperClientStatus, HelperLimits, HelperOptions, HelperStats, HelperStatus } from './transports/helper-daemon';
export { LogCommand, LOG_COMMAND, logRedirectOption, parseLogfileArgument } from './commands/log-command';
export type { LogTarget } from './commands/log-command';
export { ProbeCommand, PROBE_COMMAND } from './commands/probe-command';
export type { WireIdentity } from './commands/probe-command';
export {
  checkFdLeaks,
  describeFdLeakReport,
  expectNoFdLeaks,
  FdLeakError,
  ProcessFdSnapshot,
  settleFdSnapshots,
} from './leak-check';
export type { FdCheckOptions, FdEntry, FdLeakReport, WatchedProcess } from './leak-check';
export { describeRuntimeFd, warmRuntimeFds } from './runtime-fds';
export type { RuntimeFd } from './runtime-fds';
