// sendmsg/recvmsg with SCM_RIGHTS: cmsg packing and parsing. Plain POSIX, no
// Node-API, no libuv. Functions return -errno on failure.
#ifndef FDBRIDGE_SCM_RIGHTS_H_
#define FDBRIDGE_SCM_RIGHTS_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <vector>

namespace fdbridge {

// SCM_MAX_FD in the kernel (include/net/scm.h): the most fds one sendmsg may
// carry across all of its SCM_RIGHTS cmsgs; one more gives EINVAL.
constexpr size_t kMaxFdsPerMessage = 253;

// Room for a full SCM_RIGHTS cmsg plus the other SOL_SOCKET cmsgs Linux may
// attach (SCM_CREDENTIALS, SCM_PIDFD, SCM_SECURITY), so that a peer's extra
// control data never truncates the fds we asked for.
size_t ScmControlSpace(size_t max_fds);

// One sendmsg(2) with MSG_NOSIGNAL (EPIPE instead of SIGPIPE) and, when
// nfds > 0, one SCM_RIGHTS cmsg; to the address `to` (sendto on an
// unconnected DGRAM socket) when given. Returns the number of data bytes sent
// or -errno (EAGAIN when the socket, or a DGRAM receiver's queue, is full).
// The kernel validates every fd before queueing anything: on EBADF nothing
// was sent. Retries EINTR. `dont_wait`: MSG_DONTWAIT, for a socket whose
// file is blocking but whose sends must not wait (see
// UnixSocket::WaitOnThread); without it a blocking socket's send waits, as
// its owner asked.
ssize_t ScmSend(int sock, const void* data, size_t len, const int* fds, size_t nfds,
                const struct sockaddr_un* to = nullptr, socklen_t to_len = 0, bool dont_wait = false);

enum class RecvStatus {
  kMessage,     // data (possibly 0 bytes on DGRAM/SEQPACKET) and fds
  kWouldBlock,  // nothing to read
  kEof,         // orderly shutdown by the peer
  kCtrunc,      // MSG_CTRUNC: fds were lost; the ones that arrived were closed
  kTrunc,       // MSG_TRUNC: data did not fit; fds that arrived were closed
  kError,       // recvmsg failed: see err
};

struct RecvResult {
  RecvStatus status;
  int err;             // -errno for kError
  size_t bytes;        // data bytes received (for kTrunc: the message's real length)
  size_t nfds;         // fds in the caller's array (kMessage only)
  size_t fds_closed;   // fds that arrived and were closed here (kCtrunc/kTrunc, and
                       // unexpected fd-carrying cmsgs such as SCM_PIDFD)
  size_t other_cmsgs;  // control messages other than SCM_RIGHTS, skipped
  uint64_t close_ticket;  // the background closer's batch of the fds closed here (0: none, or closed at once)
};

// How ScmRecv closes the fds that arrived and are not handed over (a
// truncated message's, an SCM_PIDFD): at once, or, `in_background`, by the
// background closer as `owner`'s (fd_ops.h, FdCloseInBackground). A process
// that receives fds from peers it does not trust closes them in background:
// the last close of a peer's TCP socket with SO_LINGER can block for as
// long as the peer chose.
struct ScmDiscard {
  bool in_background = false;
  uint64_t owner = 0;
};

// Who sent a datagram: its address (recvmsg's msg_name) and, on a socket
// with SO_PASSCRED, its SCM_CREDENTIALS.
struct ScmSender {
  struct sockaddr_un addr;
  // sizeof(sa_family_t) or less: the sender's socket is not bound (it has no
  // address, so it cannot be answered).
  socklen_t addr_len;
  bool has_cred;
  // Checked by the kernel: the sender's own pid/uid/gid unless it holds
  // CAP_SYS_ADMIN / CAP_SETUID / CAP_SETGID (which may claim others).
  pid_t pid;
  uid_t uid;
  gid_t gid;
};

// One recvmsg(2) with MSG_CMSG_CLOEXEC (the received fds are close-on-exec
// atomically, never fixed up afterwards) and MSG_DONTWAIT. `control` must be
// at least ScmControlSpace(max_fds) bytes and suitably aligned for cmsghdr;
// `fds` must have room for max_fds. `sock_type` is SOCK_STREAM, SOCK_DGRAM or
// SOCK_SEQPACKET; it decides what a 0-byte read means.
//
// Ownership: on kMessage the caller owns fds[0..nfds). On every other status
// no fd is left open: whatever the kernel installed was closed here, or
// handed to the background closer (`discard`; its batch in close_ticket).
//
// With `sender`, the sender's address and credentials are filled in too
// (recvfrom): for a bound DGRAM socket that many peers send to.
//
// `own`: every fd that arrives is fdbridge's (a command's given fds, or
// fds a peer sent unasked that are about to be closed), registered as one
// it holds for itself (fd_ops.h, OwnedFdsLock) in the same step as the
// receive: recvmsg installs them at the lowest free numbers, where a number
// the caller closed and still names may be, and the registry lock is held
// from before recvmsg until they are registered, so that no other thread
// (a worker's command, a worker connection's caller) can name one through
// fdbridge in between. recvmsg never waits here (MSG_DONTWAIT), and the
// lock is released before any of them is closed (a close can block).
//
// `wait`: recvmsg without MSG_DONTWAIT, so on a socket whose file is blocking
// it waits for a message (at most SO_RCVTIMEO); a wait that times out or is
// interrupted by a signal is kWouldBlock (EINTR is not retried: the caller
// decides how long is left). Only with no control buffer (control_len 0)
// and not `own`: the kernel then installs no fd at all (a message that
// carried any arrives as kCtrunc, fds_closed 0), so nothing lands in our
// table while the registry lock is not held.
//
// `receipt_tag` (not `own`): the fds that arrive are that tag's receipts
// (FdInstalledReceipt: a socket a command made as it ran), which the
// command may claim as its client's; 0 for none.
void ScmRecv(int sock, int sock_type, void* buf, size_t len, void* control,
             size_t control_len, int* fds, size_t max_fds, RecvResult* out,
             ScmSender* sender = nullptr, bool own = false, ScmDiscard discard = ScmDiscard(),
             bool wait = false, uint64_t receipt_tag = 0);

// Empties the receive queue of `sock` (not listening) for its close, so
// that close(2) releases no fd a peer sent: the last close of one can block
// (a TCP socket with SO_LINGER and unsent data waits out the linger time),
// and close(2) of a socket drops what is still queued in it on the calling
// thread (unix_release_sock: the final fput of each queued file runs as the
// close returns). First shutdown(SHUT_RD): from then on a peer's send fails
// with EPIPE (STREAM, SEQPACKET, and a DGRAM sender to this socket, bound or
// connected: unix_*_sendmsg check the receiver's RCV_SHUTDOWN under its
// state lock, which shutdown takes), so the queue only shrinks; then
// non-blocking receives, with room for kMaxFdsPerMessage fds (the kernel
// drops none inside recvmsg: the most one message carries), until it is
// empty. Every fd that arrives goes to the background closer as `owner`'s
// (`own`: registered as it arrives, as ScmRecv's), each batch's ticket into
// *tickets. SEQPACKET: SO_PASSCRED is set first, so that a 0-byte message
// (it carries credentials) is told from the end of the queue (none).
// STREAM: SO_OOBINLINE (ScmSetOobInline), so that a message sent with
// MSG_OOB is read too, unless `oob_inline` says it is on already.
// Returns 0 once the queue is empty, or -errno where it could not make sure
// it is (the caller then does not close the socket on this thread).
int ScmDrainForClose(int sock, int sock_type, bool own, bool oob_inline, uint64_t owner, std::vector<uint64_t>* tickets);

// SO_OOBINLINE on: a byte a STREAM peer sends with MSG_OOB (and the fds
// sent with it) is read in line, as any other, instead of skipped by
// recvmsg with its fds dropped in the call. 0 or -errno.
int ScmSetOobInline(int sock);

// Closes `sock`, a connection (not listening) of `sock_type` whose receive
// queue may hold fds a peer sent, and that nobody else holds: emptied for
// its close (ScmDrainForClose: shut down, every fd queued handed to the
// background closer as `owner`'s), then closed here, so that its peer has
// its end of file (or EPIPE) when this returns. One that cannot be emptied
// for certain is shut down for both directions, which tells its peer the
// same, and closed by the background closer. The tickets of its background
// closes go to *tickets. The fd is no longer the caller's, whatever happens.
// `oob_inline`: as for ScmDrainForClose.
void ScmCloseConnection(int sock, int sock_type, bool own, bool oob_inline, uint64_t owner, std::vector<uint64_t>* tickets);

}  // namespace fdbridge

#endif  // FDBRIDGE_SCM_RIGHTS_H_
