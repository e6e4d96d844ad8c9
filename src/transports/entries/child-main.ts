/**
 * The child transport's far side: serves one command on the SEQPACKET socket
 * the client handed over as fd 3, and exits when the client goes away.
 */
import { dropSpawnToken } from '../../child-process';
import { native } from '../../native';
import { warmRuntimeFds } from '../../runtime-fds';
import { FRAME_SOCKET_OPTIONS } from '../../protocol';
import { wrapOwnSocket } from '../../socket';
import { CHILD_SOCKET_FD } from '../child';
import { serveConnection } from '../serve';

// The programs this command runs are not the client's spawn.
dropSpawnToken();
// dup2 into fd 3 cleared close-on-exec; put it back so that programs this
// command runs do not inherit the connection.
native.setCloexec(CHILD_SOCKET_FD, true);
// The fds libuv opens lazily and keeps, opened before the client's leak
// oracle takes this process's baseline (a command that spawns, or whose
// stdout is a pipe, would open them later and be blamed).
warmRuntimeFds();
// The connection is the library's: registered (where it is: it was open
// before any of the command's code ran, so it cannot hold a number the
// command closed), a command naming it is refused, and the fds it receives
// are registered as they arrive (native/scm_rights.h, ScmRecv's `own`).
native.own(CHILD_SOCKET_FD);
const socket = wrapOwnSocket(CHILD_SOCKET_FD, 'seqpacket', { ...FRAME_SOCKET_OPTIONS });
serveConnection(socket, {
  transport: 'child',
  reportConstructorFds: true,
  onEnd: (reason) => {
    process.exitCode = reason ? 1 : 0;
    // End now even if the command left timers or handles behind.
    process.exit();
  },
});
