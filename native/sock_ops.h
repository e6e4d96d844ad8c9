// Unix domain socket creation and queries. Plain POSIX, no Node-API, no
// libuv. Every socket made here is non-blocking and close-on-exec from the
// start (SOCK_NONBLOCK | SOCK_CLOEXEC); functions return the fd or -errno.
//
// `own`: the socket is fdbridge's own (a transport's connection, a daemon's
// listening socket), not one handed to a caller: it is numbered at or above
// the fd floor and registered as ours (FdOwnHigh in fd_ops.h), so that it
// never takes a number the caller closed and may still name, and is refused
// as closed (EBADF) if the caller names it. Closing it through FdClose (or
// FdCloseInBackground) unregisters it.
#ifndef FDBRIDGE_SOCK_OPS_H_
#define FDBRIDGE_SOCK_OPS_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "unique_fd.h"

namespace fdbridge {

// A sockaddr_un name: a filesystem path, or an abstract name (Linux: a leading
// NUL byte, no file, scoped to the network namespace). sun_path holds 108
// bytes; a path needs room for its NUL, so paths are limited to 107 bytes and
// abstract names to 107 bytes after the leading NUL.
constexpr size_t kMaxSocketPathBytes = 107;

// Fills a sockaddr_un for a path or an abstract name: 0, -EINVAL (empty, or a
// path with a NUL) or -ENAMETOOLONG.
int SockAddress(const char* name, size_t name_len, bool abstract, struct sockaddr_un* addr,
                socklen_t* addr_len);

int SockPair(int type, int out[2], bool own = false);

// An unbound, unconnected socket (a DGRAM sender that needs no address).
int SockOpen(int type, bool own = false);

// connect(2) of an existing socket to `addr`. On a DGRAM socket this only
// sets its peer (and may be done again to change it).
int SockConnectTo(int fd, const struct sockaddr_un* addr, socklen_t addr_len);

// socket + bind + (for a path and mode >= 0) chmod + listen (not for DGRAM:
// a bound DGRAM socket receives at once). The mode is set
// before listen(), while nobody can connect yet (connect gives ECONNREFUSED
// until listen), and through an O_PATH|O_NOFOLLOW handle checked to be a
// socket owned by us, so a symlink swapped in at the path between bind and
// chmod is never followed (-ENOTSOCK; someone else's socket: -EPERM). bind(2)
// itself never follows or replaces an existing name: it gives EADDRINUSE.
// On failure after bind the socket file we created is removed, but only if
// the path still names it: a file swapped in is never unlinked.
//
// `pass_cred` sets SO_PASSCRED before bind(2), so that no message can arrive
// without its sender's credentials (one queued before the option would carry
// pid 0 and the overflow uid: a false identity).
int SockListen(int type, const char* name, size_t name_len, bool abstract, int mode, int backlog,
               bool pass_cred = false, bool own = false);

// Non-blocking connect. AF_UNIX connects complete at once or fail; EAGAIN
// means the listener's backlog is full (retry later).
int SockConnect(int type, const char* name, size_t name_len, bool abstract, bool own = false);

// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC; -EAGAIN when nothing is pending.
// A connection accepted on a listening socket of ours (registered, see
// `own` above) is ours too: a daemon's connections. `listen_fd` must be
// non-blocking (the registry lock is held across the accept4 then).
int SockAccept(int listen_fd);

// listen(2) again on a socket that listens already (one systemd made and
// passed on): the kernel records the caller's credentials as the listener's
// anew (unix_listen: init_peercred), so a client's SO_PEERCRED names the
// process that serves the socket, not the one that made it (PID 1, as root,
// for a system unit with User=). Connections queued before keep what they
// copied at connect(2) (unix_stream_connect: copy_peercred): every one
// pending once listen returns is accepted (as SockAccept, ours if the
// socket is) into `queued`, for the caller to refuse. `fd` must be
// non-blocking. On failure `queued` holds what was accepted until then.
int SockListenAgain(int fd, int backlog, UniqueFds* queued);

int SockPeerCred(int fd, pid_t* pid, uid_t* uid, gid_t* gid);

// SO_PEERPIDFD (Linux 6.5): a pidfd for the peer as of connect(); -ENOPROTOOPT
// on older kernels.
int SockPeerPidfd(int fd);

// SO_TYPE: SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
int SockType(int fd);

// SO_PASSRIGHTS (Linux 6.16): with 0, SCM_RIGHTS sends to this socket fail
// with EPERM in the sender. -ENOPROTOOPT on older kernels.
int SockSetPassRights(int fd, bool on);
// Whether SO_PASSRIGHTS is on (1) or off (0); -ENOPROTOOPT before Linux
// 6.16. An accepted socket has its listener's setting from the peer's
// connect(2) on, so off at accept means no fd was ever queued on it.
int SockGetPassRights(int fd);

// SO_PASSCRED: with 1, every message received carries an SCM_CREDENTIALS
// control message (which the receive path skips).
int SockSetPassCred(int fd, bool on);

// SO_PASSPIDFD (Linux 6.5): with 1, every message received carries an
// SCM_PIDFD control message holding a new pidfd for the sender, an fd
// nobody asked for (the receive path closes it). -ENOPROTOOPT before 6.5.
int SockSetPassPidfd(int fd, bool on);

// Whether a message received on `fd` can carry any control data: SCM_RIGHTS
// (SO_PASSRIGHTS on, or unknown to the kernel: before 6.16 every socket
// takes fds), SCM_CREDENTIALS (SO_PASSCRED), SCM_PIDFD (SO_PASSPIDFD) or
// SCM_SECURITY (SO_PASSSEC). 1 or 0, or -errno.
int SockMayReceiveControl(int fd);

// SO_RCVTIMEO: how long a blocking receive waits (ms > 0; the kernel rounds
// it up to its tick).
int SockSetReceiveTimeout(int fd, int64_t ms);

// shutdown(2): how is SHUT_RD, SHUT_WR or SHUT_RDWR.
int SockShutdown(int fd, int how);

// The identity of the socket file at `path` (lstat: the name itself, never
// a symlink's target): 0, -ENOTSOCK for anything but a socket file, or -errno.
int SockFileIdentity(const char* path, dev_t* dev, ino_t* ino);

// Removes the socket file at `path` if it is still that very file (a socket
// file of device `dev` and inode `ino`): a file put there since (a socket
// another process bound after ours was found stale, a file renamed in) is
// left alone. 0, -ESTALE for another file, or -errno.
int SockUnlinkFileIfSame(const char* path, dev_t dev, ino_t ino);

}  // namespace fdbridge

#endif  // FDBRIDGE_SOCK_OPS_H_
