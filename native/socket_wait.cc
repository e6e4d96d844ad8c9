// UnixSocket::WaitOnThread: this socket's I/O run on the calling thread (a
// script, a worker thread that cannot return to its event loop), in a
// blocking recvmsg(2) where the socket allows it, else in poll(2). On a
// worker thread always in poll(2), beside the thread's wake-up
// (thread_wake.h): terminate() ends the wait at once, where a system call
// would keep the thread (and terminate()'s caller) until the deadline.
//
// The socket is shared with the asynchronous users of the same connection,
// whose messages may arrive while this waits. They must reach the filter and
// the delegate exactly as if the loop had read them: so while it waits the
// socket's delegate is a HeldEvents (and it has no filter), which offers
// each event to the waiter and keeps the rest (a message with its fds, a
// receive error, an accepted fd, a queued send's completion) in arrival
// order. Once the wait is over they are handed on, in order, before
// WaitOnThread returns, and before the loop can read anything newer.
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#include <utility>
#include <vector>

#include "fd_ops.h"
#include "scm_rights.h"
#include "sock_ops.h"
#include "thread_wake.h"
#include "unique_fd.h"
#include "unix_socket.h"

namespace fdbridge {

int64_t UnixSocket::MonotonicMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

class UnixSocket::HeldEvents : public UnixSocket::Delegate {
 public:
  explicit HeldEvents(Waiter* waiter) : waiter_(waiter) {}

  // A receive ended the connection: 0 while none has.
  int gone() const { return gone_; }

  void OnMessage(const char* data, size_t len, const int* fds, size_t nfds) override {
    if (!waiter_->done() && waiter_->TakeMessage(data, len, fds, nfds)) return;
    Held h;
    h.kind = Held::kMessage;
    h.data.assign(data, data + len);
    h.fds = UniqueFds(fds, nfds);
    held_.push_back(std::move(h));
  }

  void OnReceiveError(const RecvResult& r, const char* data, size_t len) override {
    Held h;
    h.kind = Held::kReceiveError;
    h.recv = r;
    if (data != nullptr) h.data.assign(data, data + len);
    held_.push_back(std::move(h));
    // Whatever it was (EOF, a reset, a truncated message: a broken
    // protocol), the connection is over: so is the wait.
    if (gone_ == 0) {
      gone_ = r.status == RecvStatus::kError ? r.err : r.status == RecvStatus::kEof ? kWaitEof : -EPROTO;
    }
  }

  void OnAccept(int fd, int err) override {
    Held h;
    h.kind = Held::kAccept;
    if (fd >= 0) h.fds = UniqueFds(&fd, 1);
    h.err = err;
    held_.push_back(std::move(h));
  }

  void OnSendComplete(uint32_t id, int err) override {
    if (waiter_->TakeSendComplete(id, err)) return;
    Held h;
    h.kind = Held::kSendComplete;
    h.id = id;
    h.err = err;
    held_.push_back(std::move(h));
  }

  // Hands every held event on, in order, as the loop would have: a message
  // through the socket's receive buffer (a delegate with an external buffer
  // reads it there) to the filter, then the delegate. Stops if `socket` is
  // closed on the way; the fds of the events not delivered are closed then
  // (UniqueFds).
  void Replay(UnixSocket* socket) {
    for (size_t i = 0; i < held_.size() && !socket->closed_; i++) {
      Held& h = held_[i];
      switch (h.kind) {
        case Held::kMessage: {
          memcpy(socket->recv_buf_, h.data.data(), h.data.size());
          std::vector<int> fds = h.fds.release();  // the receiver's from here on
          if (socket->filter_ != nullptr &&
              socket->filter_->FilterMessage(socket->recv_buf_, h.data.size(), fds.data(), fds.size())) {
            break;
          }
          socket->delegate_->OnMessage(socket->recv_buf_, h.data.size(), fds.data(), fds.size());
          break;
        }
        case Held::kReceiveError:
          if (!h.data.empty()) memcpy(socket->recv_buf_, h.data.data(), h.data.size());
          socket->delegate_->OnReceiveError(h.recv, h.data.empty() ? nullptr : socket->recv_buf_, h.data.size());
          break;
        case Held::kAccept: {
          std::vector<int> fd = h.fds.release();
          socket->delegate_->OnAccept(fd.empty() ? -1 : fd[0], h.err);
          break;
        }
        case Held::kSendComplete:
          socket->CompleteSend(h.id, h.err);
          break;
      }
    }
    held_.clear();
  }

 private:
  struct Held {
    enum Kind { kMessage, kReceiveError, kAccept, kSendComplete } kind;
    std::vector<char> data;
    UniqueFds fds;  // a message's fds, or an accepted socket
    RecvResult recv{};
    uint32_t id = 0;
    int err = 0;
  };
  Waiter* waiter_;
  int gone_ = 0;
  std::vector<Held> held_;
};

bool UnixSocket::BlockingReceiveFor(int64_t left_ms) {
  if (blocking_receive_ < 0) {
    // Looked at once per socket: a client's connection refuses fds from
    // the start (refuse-fds.ts) and never turns the other options on.
    blocking_receive_ = !receive_from_ && type_ != SOCK_DGRAM && SockMayReceiveControl(sock_.get()) == 0 &&
                                FdSetNonblock(sock_.get(), false) == 0
                            ? 1
                            : 0;
  }
  if (blocking_receive_ == 0) return false;
  if (left_ms > 0x7fffffff) left_ms = 0x7fffffff;
  // Set again only when the time left is not what it was set to, within
  // 2 ms (set 1 ms long, as a clock read a moment later may find one ms
  // less, or not): a caller that always passes the same timeout sets it
  // once. The wait may end up to that much, and a kernel tick, after the
  // deadline; never before it.
  if (receive_timeout_ms_ < left_ms || receive_timeout_ms_ - left_ms > 2) {
    if (SockSetReceiveTimeout(sock_.get(), left_ms + 1) != 0) return false;
    receive_timeout_ms_ = left_ms + 1;
  }
  return true;
}

int UnixSocket::WaitOnThread(Waiter* waiter, int64_t deadline_ms) {
  if (closed_ || !reading_) return -ENOTCONN;
  // The real delegate provides the receive buffer (the held events are
  // copied back into it), not the stand-in.
  ReceiveBuffer();
  HeldEvents held(waiter);
  Delegate* delegate = delegate_;
  Filter* filter = filter_;
  // From here on the loop's callbacks cannot run (this thread is busy), and
  // whatever this socket reads or completes goes to `held`.
  delegate_ = &held;
  filter_ = nullptr;
  waiter_ = waiter;
  int result = -ETIMEDOUT;
  // A worker's wait never sleeps in recvmsg: nothing could wake it there.
  const bool wakeable = WakeThisThreadRegistered();
  bool woken = false;
  while (!closed_) {
    if (waiter->done()) {
      result = 0;
      break;
    }
    if (held.gone() != 0) {
      result = held.gone();
      break;
    }
    // After the two above: a reply or an end read in the same turn as
    // the wake-up is the wait's outcome.
    if (woken) {
      result = kWaitWoken;
      break;
    }
    int64_t left = deadline_ms - MonotonicMs();
    if (left <= 0) break;
    if (!wakeable && queue_.empty() && reading_ && !ReadPaused() && BlockingReceiveFor(left)) {
      // Wakes with a message, the end of the connection, the timeout or a
      // signal (kWouldBlock: the loop looks at the clock again).
      RecvResult r;
      ScmRecv(sock_.get(), type_, recv_buf_, recv_len_, nullptr, 0, recv_fds_.data(), 0, &r,
              nullptr, false, Discard(), /*wait=*/true);
      Deliver(&r);
      continue;
    }
    const int wake = wakeable ? WakeFdOfThisThread() : -1;
    struct pollfd polled[2] = {{sock_.get(), static_cast<short>(POLLIN | (queue_.empty() ? 0 : POLLOUT)), 0},
                               {wake, POLLIN, 0}};
    const struct pollfd& p = polled[0];
    int n = poll(polled, wake >= 0 ? 2 : 1, left > 0x7fffffff ? 0x7fffffff : static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      result = -errno;
      break;
    }
    if (n == 0) continue;  // the deadline is checked above
    if (wake >= 0 && polled[1].revents != 0) woken = WakeThisThreadWoken();
    // As OnPoll does: writes first (a queued send may be what the peer
    // waits for), then reads; POLLHUP/POLLERR are read as EOF or the
    // socket's error by the receive itself.
    if ((p.revents & (POLLOUT | POLLERR | POLLHUP)) && !queue_.empty()) DoWrite();
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      if (!reading_ || ReadPaused()) {
        // Nothing here can read it (a socket its reader has stopped, or
        // paused behind its own replies): nothing can arrive.
        result = waiter->done() ? 0 : -ENOTCONN;
        break;
      }
      DoRead();
    }
  }
  if (closed_ && result == -ETIMEDOUT) result = -ENOTCONN;
  waiter_ = nullptr;
  delegate_ = delegate;
  // A filter that the socket's close detached stays detached.
  if (!closed_) filter_ = filter;
  held.Replay(this);
  if (!closed_) UpdatePoll();
  return result;
}

}  // namespace fdbridge
