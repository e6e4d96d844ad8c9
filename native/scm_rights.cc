#include "scm_rights.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "fd_ops.h"
#include "unique_fd.h"

#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04  // include/uapi/asm-generic/socket.h, Linux 6.5
#endif

namespace fdbridge {

size_t ScmControlSpace(size_t max_fds) {
  return CMSG_SPACE(max_fds * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)) +
         CMSG_SPACE(sizeof(int)) + CMSG_SPACE(256);
}

ssize_t ScmSend(int sock, const void* data, size_t len, const int* fds, size_t nfds,
                const struct sockaddr_un* to, socklen_t to_len, bool dont_wait) {
  if (nfds > kMaxFdsPerMessage) return -EINVAL;
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int))];
  } control;
  struct iovec iov;
  iov.iov_base = const_cast<void*>(data);
  iov.iov_len = len;
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (to != nullptr) {
    msg.msg_name = const_cast<struct sockaddr_un*>(to);
    msg.msg_namelen = to_len;
  }
  if (nfds > 0) {
    size_t payload = nfds * sizeof(int);
    memset(control.buf, 0, CMSG_SPACE(payload));
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(payload);
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(payload);
    memcpy(CMSG_DATA(cmsg), fds, payload);
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL | (dont_wait ? MSG_DONTWAIT : 0));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  return n;
}

namespace {

// Closes the fds that arrived and go to nobody: at once, or as one batch
// of the background closer's (ScmDiscard).
class Discarded {
 public:
  Discarded(const ScmDiscard& how, RecvResult* out) : how_(how), out_(out) {}
  ~Discarded() { Flush(); }
  Discarded(const Discarded&) = delete;
  Discarded& operator=(const Discarded&) = delete;

  void Add(int fd) {
    out_->fds_closed++;
    if (how_.in_background) {
      fds_.push_back(fd);
    } else {
      UniqueFd(fd).reset();
    }
  }
  void Flush() {
    if (fds_.empty()) return;
    out_->close_ticket = FdCloseInBackground(fds_.data(), fds_.size(), how_.owner, /*held_for_peer=*/true);
    fds_.clear();
  }

 private:
  ScmDiscard how_;
  RecvResult* out_;
  std::vector<int> fds_;
};

// Whether `c` carries fds the kernel installed in our table: SCM_RIGHTS, or
// an SCM_PIDFD.
bool CarriesFds(const struct cmsghdr* c) {
  return c->cmsg_len >= CMSG_LEN(0) && c->cmsg_level == SOL_SOCKET &&
         (c->cmsg_type == SCM_RIGHTS || c->cmsg_type == SCM_PIDFD);
}

// Calls each(fd, cmsg_type) for every fd the kernel installed from `msg`,
// in order; an fd `each` changes (FdMarkNew moved it) is written back. The one walk of the fds that arrived: what ScmRecv registers
// (`own`) is exactly what it then hands over or discards, whatever the
// message's shape. Under MSG_CTRUNC the kernel shortens cmsg_len to what
// it installed (scm_detach_fds), so the count is exactly the fds now in
// our table.
// The fds `c` carries (CarriesFds(c)).
size_t CmsgFdCount(const struct cmsghdr* c) { return (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); }

template <typename Each>
void ForEachCmsgFd(struct msghdr* msg, Each each) {
  for (struct cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr; c = CMSG_NXTHDR(msg, c)) {
    if (!CarriesFds(c)) continue;
    size_t n = CmsgFdCount(c);
    unsigned char* p = CMSG_DATA(c);
    for (size_t i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, p + i * sizeof(int), sizeof(int));
      int was = fd;
      each(fd, c->cmsg_type);
      if (fd != was) memcpy(p + i * sizeof(int), &fd, sizeof(int));  // moved (FdMarkNew)
    }
  }
}

// A 0-byte read on SEQPACKET is either a 0-byte message or EOF; recvmsg does
// not tell which. The peer's shutdown shows as POLLRDHUP, so a 0-byte read
// without fds counts as EOF only once the peer has shut down. (A 0-byte,
// fd-less message sent right before the peer closed is reported as EOF: it
// carries nothing.)
bool PeerHasShutDown(int sock) { return (PollNow(sock, POLLRDHUP) & (POLLRDHUP | POLLHUP)) != 0; }

}  // namespace

void ScmRecv(int sock, int sock_type, void* buf, size_t len, void* control,
             size_t control_len, int* fds, size_t max_fds, RecvResult* out,
             ScmSender* sender, bool own, ScmDiscard discard, bool wait, uint64_t receipt_tag) {
  memset(out, 0, sizeof(*out));
  if (wait && (own || control_len != 0)) {
    out->status = RecvStatus::kError;
    out->err = -EINVAL;
    return;
  }
  struct iovec iov;
  iov.iov_base = buf;
  iov.iov_len = len;
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = control_len;
  if (sender != nullptr) {
    sender->has_cred = false;
    msg.msg_name = &sender->addr;
    msg.msg_namelen = sizeof(sender->addr);
  }
  // MSG_TRUNC on DGRAM/SEQPACKET makes recvmsg return the real length of a
  // message that did not fit, so the error can say how big it was.
  int flags = MSG_CMSG_CLOEXEC | (wait ? 0 : MSG_DONTWAIT) | (sock_type == SOCK_STREAM ? 0 : MSG_TRUNC);
  ssize_t n;
  int err = 0;
  {
    // Received and registered (own), or their installs noted, as one step
    // (FdInstalled): with no room for control messages no fd can come.
    std::optional<OwnedFdsLock> lock;
    if (own || control_len != 0) lock.emplace();
    do {
      n = recvmsg(sock, &msg, flags);  // installed: FdMarkNew or FdInstalled below
    } while (n < 0 && errno == EINTR && !wait);
    if (n < 0) err = errno == EINTR ? EAGAIN : errno;
    if (n >= 0 && own) ForEachCmsgFd(&msg, [](int& fd, int) { FdMarkNew(&fd, 1); });
    if (n >= 0 && !own && control_len != 0) ForEachCmsgFd(&msg, [receipt_tag](int& fd, int) { FdInstalledReceipt(fd, receipt_tag); });
  }
  if (n < 0) {
    errno = err;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      out->status = RecvStatus::kWouldBlock;
    } else {
      out->status = RecvStatus::kError;
      out->err = -errno;
    }
    return;
  }
  out->bytes = static_cast<size_t>(n);
  if (sender != nullptr) sender->addr_len = msg.msg_namelen;

  // Hands its fds on when this returns (the batch's ticket into *out).
  Discarded discarded(discard, out);
  if (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
    ForEachCmsgFd(&msg, [&discarded](int fd, int) { discarded.Add(fd); });
    out->status = (msg.msg_flags & MSG_CTRUNC) ? RecvStatus::kCtrunc : RecvStatus::kTrunc;
    return;
  }

  // The received set is owned here until it is handed to the caller whole.
  // Sized once from the cmsg lengths (what is taken, at most max_fds): a
  // 253-fd message allocates once, none without SCM_RIGHTS.
  UniqueFds received;
  size_t rights = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (CarriesFds(c) && c->cmsg_type == SCM_RIGHTS) rights += CmsgFdCount(c);
  }
  received.reserve(std::min(rights, max_fds));
  bool overflow = false;
  ForEachCmsgFd(&msg, [&](int fd, int type) {
    if (type == SCM_PIDFD) {
      // A pidfd we never asked for (SO_PASSPIDFD is never set): closed
      // rather than leaked.
      discarded.Add(fd);
      out->other_cmsgs++;
    } else if (received.size() < max_fds) {
      received.push_back(UniqueFd(fd));
    } else {
      // More than max_fds, and the kernel did not truncate: the control
      // buffer keeps room for the other control messages
      // (ScmControlSpace), where a few more fds fit. Refused whole, like a
      // truncated message.
      discarded.Add(fd);
      overflow = true;
    }
  });
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_len < CMSG_LEN(0) || CarriesFds(c)) continue;
    if (sender != nullptr && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
        c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
      struct ucred cred;
      memcpy(&cred, CMSG_DATA(c), sizeof(cred));
      sender->has_cred = true;
      sender->pid = cred.pid;
      sender->uid = cred.uid;
      sender->gid = cred.gid;
    }
    out->other_cmsgs++;
  }
  if (overflow) {
    for (int fd : received.release()) discarded.Add(fd);
    out->status = RecvStatus::kCtrunc;
    return;
  }
  size_t nfds = received.size();
  out->nfds = nfds;
  received.release_into(fds);

  if (n == 0 && nfds == 0) {
    bool eof = sock_type == SOCK_STREAM ||
               (sock_type == SOCK_SEQPACKET && PeerHasShutDown(sock));
    if (eof) {
      out->status = RecvStatus::kEof;
      return;
    }
  }
  out->status = RecvStatus::kMessage;
}

int ScmSetOobInline(int sock) {
  int on = 1;
  if (setsockopt(sock, SOL_SOCKET, SO_OOBINLINE, &on, sizeof(on)) != 0) return -errno;
  return 0;
}

int ScmDrainForClose(int sock, int sock_type, bool own, bool oob_inline, uint64_t owner, std::vector<uint64_t>* tickets) {
  if (shutdown(sock, SHUT_RD) != 0) return -errno;
  if (sock_type == SOCK_STREAM && !oob_inline) {
    // A message sent with MSG_OOB is skipped by a plain read, its fds
    // dropped inside recvmsg (af_unix.c, manage_oob); inline it is read.
    int r = ScmSetOobInline(sock);
    if (r != 0) return r;
  }
  if (sock_type == SOCK_SEQPACKET) {
    // After our own SHUT_RD an empty SEQPACKET queue reads as 0 bytes
    // (end of file), as a 0-byte message does; with SO_PASSCRED every
    // message carries SCM_CREDENTIALS (recorded for every message sent,
    // whenever the option is set), the end of the queue nothing.
    int one = 1;
    if (setsockopt(sock, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) return -errno;
  }
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(kMaxFdsPerMessage * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)) +
             CMSG_SPACE(sizeof(int)) + CMSG_SPACE(256)];
  } control;
  static_assert(sizeof(control.buf) >= CMSG_SPACE(kMaxFdsPerMessage * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)),
                "room for a full SCM_RIGHTS and the credentials");
  // Data is only skipped: a DGRAM/SEQPACKET message longer than this is
  // taken whole (MSG_TRUNC, its fds discarded to the closer), a STREAM's
  // bytes take several reads.
  char data[4096];
  int fds[kMaxFdsPerMessage];
  for (;;) {
    RecvResult r;
    ScmRecv(sock, sock_type, data, sizeof(data), control.buf, sizeof(control.buf), fds, kMaxFdsPerMessage, &r,
            nullptr, own, ScmDiscard{true, owner});
    if (r.close_ticket != 0) tickets->push_back(r.close_ticket);
    switch (r.status) {
      case RecvStatus::kMessage:
        if (r.nfds > 0) tickets->push_back(FdCloseInBackground(fds, r.nfds, owner, /*held_for_peer=*/true));
        continue;
      case RecvStatus::kTrunc:
      case RecvStatus::kCtrunc:
        continue;  // dequeued, its fds with the closer
      case RecvStatus::kEof:
        // A 0-byte SEQPACKET message: its credentials came. (A STREAM read
        // at the end carries credentials too, with SO_PASSCRED set.)
        if (sock_type == SOCK_SEQPACKET && r.other_cmsgs > 0) continue;
        return 0;
      case RecvStatus::kWouldBlock:
        return 0;
      case RecvStatus::kError:
        // A pending ECONNRESET (the peer closed with our data unread) is
        // reported once, before what is still queued.
        if (r.err == -ECONNRESET) continue;
        return r.err;
    }
  }
}

void ScmCloseConnection(int sock, int sock_type, bool own, bool oob_inline, uint64_t owner, std::vector<uint64_t>* tickets) {
  if (ScmDrainForClose(sock, sock_type, own, oob_inline, owner, tickets) == 0) {
    UniqueFd(sock).reset();
    return;
  }
  shutdown(sock, SHUT_RDWR);
  tickets->push_back(FdCloseInBackground(&sock, 1, owner, /*held_for_peer=*/false));
}

}  // namespace fdbridge
