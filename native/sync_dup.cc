// UnixSocket::DupSync: one duplication that blocks the calling thread (a
// script, a worker thread) instead of returning to the event loop.
//
// The socket is shared with the asynchronous requests of the same
// connection, whose replies may arrive while this waits. They must reach
// their requests exactly as if the loop had read them: so while it waits the
// socket's delegate is a HeldEvents, which keeps every event (a message with
// its fds, a receive error, a queued send's completion, a requestDup reply)
// in arrival order and takes only the reply to this request. Once the wait
// is over the real delegate gets the held events, in order, before DupSync
// returns, and before the loop can read anything newer.
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#include <vector>

#include "fd_ops.h"
#include "frame_format.h"
#include "unix_socket.h"

namespace fdbridge {

namespace {

using frame::kDupOk;
using frame::kError;
using frame::kResult;
using frame::ReadU32;
constexpr size_t kHeader = frame::kHeaderBytes;

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

class UnixSocket::HeldEvents : public UnixSocket::Delegate {
 public:
  HeldEvents(UnixSocket* socket, uint32_t id, uint32_t send_id) : socket_(socket), id_(id), send_id_(send_id) {}

  // Whether the wait is over: the reply came, or the socket can bring none.
  bool done() const { return done_; }
  bool stopped_reading() const { return stopped_reading_; }
  SyncDup& result() { return result_; }

  void OnMessage(const char* data, size_t len, const int* fds, size_t nfds) override {
    if (!done_ && len >= kHeader && ReadU32(data + 4) == id_ &&
        (static_cast<uint8_t>(data[0]) == kDupOk || static_cast<uint8_t>(data[0]) == kError ||
         static_cast<uint8_t>(data[0]) == kResult)) {
      done_ = true;
      // The read loop stops after this message instead of reading on until
      // EAGAIN (one recvmsg less per call); DupSync turns reading back on,
      // and the event loop reads whatever came after it.
      if (socket_->reading_) {
        socket_->reading_ = false;
        stopped_reading_ = true;
      }
      for (size_t i = 0; i < nfds; i++) FdClose(fds[i]);
      result_.fds_closed = nfds;
      if (nfds == 0 && len == kHeader + 4 && static_cast<uint8_t>(data[0]) == kDupOk && data[1] == 0 && data[2] == 0 &&
          data[3] == 0 && static_cast<int32_t>(ReadU32(data + kHeader)) >= 0) {
        result_.status = SyncDup::kFd;
        result_.fd = static_cast<int32_t>(ReadU32(data + kHeader));
      } else {
        result_.status = SyncDup::kReply;
        result_.reply.assign(data, data + len);
      }
      return;
    }
    Held h;
    h.kind = Held::kMessage;
    h.data.assign(data, data + len);
    h.fds.assign(fds, fds + nfds);
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
    if (!done_) {
      done_ = true;
      result_.status = SyncDup::kGone;
      result_.err = r.status == RecvStatus::kError ? r.err : r.status == RecvStatus::kEof ? 0 : -EPROTO;
    }
  }

  void OnAccept(int fd, int err) override {
    Held h;
    h.kind = Held::kAccept;
    h.value = fd;
    h.err = err;
    held_.push_back(std::move(h));
  }

  void OnSendComplete(uint32_t id, int err) override {
    if (id == send_id_ && id != 0) {
      // This request's own send, queued behind others: it failed, or it has
      // left (then its reply is what we wait for).
      if (err != 0 && !done_) {
        done_ = true;
        result_.status = SyncDup::kGone;
        result_.err = err;
      }
      return;
    }
    Held h;
    h.kind = Held::kSendComplete;
    h.value = static_cast<int64_t>(id);
    h.err = err;
    held_.push_back(std::move(h));
  }

  void OnDupReply(uint32_t id, int32_t fd) override {
    Held h;
    h.kind = Held::kDupReply;
    h.value = static_cast<int64_t>(id);
    h.err = fd;
    held_.push_back(std::move(h));
  }

  // Hands every held event to `to`, in order. A message goes through the
  // socket's receive buffer, where a delegate with an external buffer reads
  // it (it gets only the length). Stops if `socket` is closed on the way;
  // the fds of the messages not delivered are closed then.
  void Replay(UnixSocket* socket, Delegate* to) {
    size_t i = 0;
    for (; i < held_.size() && !socket->closed_; i++) {
      Held& h = held_[i];
      switch (h.kind) {
        case Held::kMessage:
          memcpy(socket->recv_buf_, h.data.data(), h.data.size());
          to->OnMessage(socket->recv_buf_, h.data.size(), h.fds.data(), h.fds.size());
          break;
        case Held::kReceiveError:
          if (!h.data.empty()) memcpy(socket->recv_buf_, h.data.data(), h.data.size());
          to->OnReceiveError(h.recv, h.data.empty() ? nullptr : socket->recv_buf_, h.data.size());
          break;
        case Held::kAccept:
          to->OnAccept(static_cast<int>(h.value), h.err);
          break;
        case Held::kSendComplete:
          to->OnSendComplete(static_cast<uint32_t>(h.value), h.err);
          break;
        case Held::kDupReply:
          to->OnDupReply(static_cast<uint32_t>(h.value), h.err);
          break;
      }
    }
    for (; i < held_.size(); i++) {
      for (int fd : held_[i].fds) FdClose(fd);
      if (held_[i].kind == Held::kAccept && held_[i].value >= 0) FdClose(static_cast<int>(held_[i].value));
    }
    held_.clear();
  }

 private:
  struct Held {
    enum Kind { kMessage, kReceiveError, kAccept, kSendComplete, kDupReply } kind;
    std::vector<char> data;
    std::vector<int> fds;
    RecvResult recv{};
    int64_t value = 0;
    int err = 0;
  };
  UnixSocket* socket_;
  uint32_t id_;
  uint32_t send_id_;
  bool done_ = false;
  bool stopped_reading_ = false;
  SyncDup result_{SyncDup::kTimeout, -1, 0, 0, {}};
  std::vector<Held> held_;
};

UnixSocket::SyncDup UnixSocket::DupSync(int fd, uint32_t id, uint32_t send_id, int timeout_ms) {
  char header[kHeader];
  frame::EncodeHeader(header, frame::kDup, id);
  SyncDup out{SyncDup::kNotSent, -1, 0, 0, {}};
  if (closed_ || !reading_) {
    out.status = SyncDup::kGone;
    out.err = -ENOTCONN;
    return out;
  }
  const int64_t deadline = NowMs() + timeout_ms;
  // The real delegate provides the receive buffer (the held events are
  // copied back into it), not the stand-in.
  ReceiveBuffer();
  HeldEvents held(this, id, send_id);
  Delegate* real = delegate_;
  // From here on the loop's callbacks cannot run (this thread is busy), and
  // whatever this socket reads or completes goes to `held`.
  delegate_ = &held;
  int r;
  {
    // A number fdbridge holds for itself is refused as closed, checked and
    // sent under one lock (fd_ops.h, OwnedFdsLock); not held for the wait.
    OwnedFdsLock owned;
    r = FdRefuseOwned(&fd, 1);
    if (r == 0) r = Send(header, sizeof header, &fd, 1, send_id);
  }
  if (r < 0 || r == kQueueFull) {
    delegate_ = real;
    out.status = r < 0 ? SyncDup::kNotSent : SyncDup::kQueueFull;
    out.err = r < 0 ? r : 0;
    return out;
  }
  while (!held.done() && !closed_) {
    int64_t left = deadline - NowMs();
    if (left <= 0) break;
    struct pollfd p = {fd_, static_cast<short>(POLLIN | (queue_.empty() ? 0 : POLLOUT)), 0};
    int n = poll(&p, 1, left > 0x7fffffff ? 0x7fffffff : static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (!held.done()) {
        held.result().status = SyncDup::kGone;
        held.result().err = -errno;
      }
      break;
    }
    if (n == 0) continue;  // the deadline is checked above
    // As OnPoll does: writes first (a queued request of ours may be what the
    // peer waits for), then reads; POLLHUP/POLLERR are read as EOF or the
    // socket's error by the receive itself.
    if ((p.revents & (POLLOUT | POLLERR | POLLHUP)) && !queue_.empty()) DoWrite();
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      if (!reading_ || ReadPaused()) {
        // Nothing here can read it (the protocol layer reads at all times:
        // this is a socket it has stopped): no reply can come.
        if (!held.done()) {
          held.result().status = SyncDup::kGone;
          held.result().err = -ENOTCONN;
        }
        break;
      }
      DoRead();
    }
  }
  delegate_ = real;
  if (held.stopped_reading()) reading_ = true;
  out = std::move(held.result());
  held.Replay(this, real);
  if (!closed_) UpdatePoll();
  return out;
}

}  // namespace fdbridge
