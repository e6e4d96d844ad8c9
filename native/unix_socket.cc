#include "unix_socket.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#include "fd_ops.h"
#include "sock_ops.h"
#include "unique_fd.h"

namespace fdbridge {

namespace {
// Bound the work done per readiness event so that one busy socket cannot
// starve timers and other handles (libuv's uv__read uses 32 as well).
constexpr int kMaxReadsPerWakeup = 32;

}  // namespace

UnixSocket* UnixSocket::Create(uv_loop_t* loop, int fd, int type, size_t max_fds,
                               size_t recv_buffer_size, Delegate* delegate, int* err,
                               char* external_buffer) {
  if (max_fds > kMaxFdsPerMessage) max_fds = kMaxFdsPerMessage;
  // Read before the registration (polled_.Init): a new fd of ours that takes
  // the number after the read counts as moved at the next look (Lost), also
  // when no registry lock is held across this call.
  uint64_t takeovers = FdTakeOvers();
  UnixSocket* s = new UnixSocket(fd, type, max_fds, recv_buffer_size, delegate, external_buffer);
  // A poll of this thread's at the same number whose file was closed behind
  // our back lets go of the number before this one polls it (PolledNumber,
  // OnNumberTaken); the socket's file is read and kept on the way.
  int r = s->polled_.Init(loop, fd);
  if (r != 0) {
    // The fd stays the caller's: every caller (the binding, and through it
    // UnixSocket/UnixServer in TypeScript) closes it when construction fails,
    // so closing it here too would be a double close.
    *err = r;
    s->sock_.release();
    delete s;
    return nullptr;
  }
  // A socket of ours (fd_ops.h registry: a transport's connection, a
  // daemon's accepted socket) receives fds that are ours too. Its
  // registration and file, read by polled_.Init, are kept: a program can
  // close the number behind our back, and another file take it
  // (FdStillHeld, Lost).
  if (s->own_socket()) s->takeovers_seen_ = takeovers;
  // A STREAM peer can send a byte with MSG_OOB, and fds with it: a plain
  // recvmsg then skips that message and drops its fds inside the call
  // (af_unix.c, manage_oob), on this thread, where the last close of one
  // can block. Inline, it is read as any other message, fds and all.
  s->oob_inline_ = type == SOCK_STREAM && ScmSetOobInline(fd) == 0;
  *err = 0;
  return s;
}

UnixSocket::UnixSocket(int fd, int type, size_t max_fds, size_t recv_buffer_size,
                       Delegate* delegate, char* external_buffer)
    : sock_(fd),
      type_(type),
      max_fds_(max_fds),
      delegate_(delegate),
      recv_buf_(external_buffer),
      recv_len_(recv_buffer_size > 0 ? recv_buffer_size : 1),
      // Room for the most fds a message can carry, whatever max_fds says:
      // with less, the kernel would drop the fds past the room inside
      // recvmsg (MSG_CTRUNC), on this thread, where the last close of one
      // can block. ScmRecv hands those past max_fds to the closer instead.
      control_len_(ScmControlSpace(kMaxFdsPerMessage)),
      recv_fds_(kMaxFdsPerMessage) {
  poll_.data = this;
  control_.reset(new char[control_len_]);
}

UnixSocket::~UnixSocket() = default;

bool UnixSocket::SetReceiveBufferSize(size_t len) {
  if (recv_buf_ != nullptr) return false;
  recv_len_ = len > 0 ? len : 1;
  return true;
}

char* UnixSocket::ReceiveBuffer() {
  if (recv_buf_ == nullptr) {
    recv_buf_ = delegate_->ProvideReceiveBuffer(recv_len_);
    if (recv_buf_ == nullptr) {
      own_buf_.resize(recv_len_);
      recv_buf_ = own_buf_.data();
    }
  }
  return recv_buf_;
}

bool UnixSocket::Lost(bool check_file) {
  if (lost_) return true;
  if (!own_socket()) return false;
  // Only a new fd of ours that took the number can have ended it in the
  // registry since the last look: one relaxed load while none has.
  uint64_t takeovers = FdTakeOvers();
  bool moved = takeovers != takeovers_seen_;
  takeovers_seen_ = takeovers;
  bool held;
  if (check_file && polled_.known()) {
    // The file still there and the registry unmoved: held, without the
    // registry's lock. Else the registry decides, with what was just read
    // (and ends the registration of a socket whose file is gone).
    bool same = polled_.Holds(sock_.get());
    if (same && !moved) return false;
    held = FdStillHeldLooked(sock_.get(), polled_.registration(), same);
  } else if (!moved) {
    return false;
  } else {
    held = FdStillHeld(sock_.get(), polled_.registration(), nullptr);
  }
  if (held) return false;
  // Closed behind our back: the number is another file now (or none), which
  // this socket never polls, reads, writes or closes again. libuv's watch
  // of it goes at once (the epoll entry went with the file; a change of its
  // events would now fail in epoll_ctl, which libuv does not survive).
  LetGo();
  return true;
}

void UnixSocket::LetGo() {
  lost_ = true;
  polled_.LetGo();
  poll_events_ = 0;
}

void UnixSocket::OnNumberTaken(void* owner, const FdIdentity& file, bool known) {
  UnixSocket* self = static_cast<UnixSocket*>(owner);
  if (self->closed_ || self->lost_) return;
  // The same file: this socket still holds it (a second socket made on it
  // meets this one's poll in libuv: EEXIST). Else the number was closed
  // behind this socket's back: a socket of ours ends its registration too
  // (Lost, which says so to a watching leak check).
  if (self->polled_.Same(file, known) && !self->Lost(false)) return;
  if (!self->Lost(true)) self->LetGo();
}

int UnixSocket::Send(const char* data, size_t len, const int* fds, size_t nfds, uint32_t id, bool exempt) {
  if (closed_ || Lost(false)) return -EBADF;
  if (nfds > kMaxFdsPerMessage) return -EINVAL;
  if (type_ == SOCK_STREAM && len == 0 && nfds > 0) return -EINVAL;
  if (!exempt && send_queue_full()) return kQueueFull;
  size_t offset = 0;
  if (queue_.empty()) {
    ssize_t n = ScmSend(sock_.get(), data, len, fds, nfds, nullptr, 0, blocking_receive_ == 1);
    if (n >= 0 && static_cast<size_t>(n) == len) return kSent;
    // EBADF or ENOTSOCK for our own socket's number: closed behind our back?
    if ((n == -EBADF || n == -ENOTSOCK) && Lost(true)) return -EBADF;
    if (n < 0 && n != -EAGAIN) return static_cast<int>(n);
    if (n > 0) {
      // A partial STREAM write: the fds went with the first byte, only the
      // rest of the data waits.
      offset = static_cast<size_t>(n);
      nfds = 0;
    }
  }
  return Enqueue(nullptr, 0, data, len, offset, fds, nfds, id);
}

int UnixSocket::SendTo(const struct sockaddr_un* to, socklen_t to_len, const char* data, size_t len,
                       const int* fds, size_t nfds, uint32_t id, bool wait_when_full) {
  if (closed_) return -EBADF;
  if (nfds > kMaxFdsPerMessage) return -EINVAL;
  if (type_ != SOCK_DGRAM || to == nullptr || to_len == 0) return -EINVAL;
  if (queue_.empty()) {
    // A datagram goes whole or not at all: n is len or -errno.
    ssize_t n = ScmSend(sock_.get(), data, len, fds, nfds, to, to_len, blocking_receive_ == 1);
    if (n >= 0) return 0;
    if (n != -EAGAIN || !wait_when_full) return static_cast<int>(n);
  } else if (!wait_when_full) {
    return -EAGAIN;
  }
  if (send_queue_full()) return kQueueFull;
  // It waits: an unbound sender's for the receiver the name has now, or
  // none (PinFor fails: ECONNREFUSED, ENOENT, ... as sendto would).
  Pin* pin = nullptr;
  if (SendsUnbound()) {
    int r = PinFor(*to, to_len, &pin);
    if (r != 0) return r;
  }
  return Enqueue(to, to_len, data, len, 0, fds, nfds, id, pin);
}

int UnixSocket::Enqueue(const struct sockaddr_un* to, socklen_t to_len, const char* data, size_t len,
                        size_t offset, const int* fds, size_t nfds, uint32_t id, Pin* pin) {
  QueuedSend q;
  q.offset = 0;
  q.id = id;
  q.to_len = to_len;
  if (to != nullptr) q.to = *to;
  q.data.assign(data + offset, data + len);
  // Pin the open files: the caller may close or reuse its fd numbers before
  // the socket becomes writable (oven-sh/bun#37854 sent the wrong file).
  // The copies go above the floor and above every fd in the list
  // (FdDupAllHigh): one that took the lowest free number could take the
  // number of a closed fd later in the list, which dup would then "succeed"
  // on, queueing the wrong file in its place; or a number the caller closed
  // and names in its next send.
  int highest = -1;
  for (size_t i = 0; i < nfds; i++) {
    if (fds[i] > highest) highest = fds[i];
  }
  std::vector<int> pinned(nfds);
  q.takeovers = FdTakeOvers();
  int r = FdDupAllHigh(fds, nfds, FdAbove(highest), pinned.data());
  if (r < 0) {
    if (pin != nullptr && pin->queued == 0) ClosePin(pin);
    return r;
  }
  // Each copy's file and registration, checked before the copies are sent
  // or closed (DropSwappedCopies): only a queued send pays for them.
  q.files.resize(nfds);
  q.registrations.resize(nfds);
  FdRegistrations(pinned.data(), nfds, q.registrations.data());
  size_t unread = nfds;
  for (size_t i = 0; i < nfds && unread == nfds; i++) {
    if (FdFileIdentity(pinned[i], &q.files[i]) != 0) unread = i;
  }
  if (unread < nfds) {
    // A copy closed by another thread as it was made: that number is let
    // go of, the other copies handed to the closer, nothing queued.
    FdStillHeldLooked(pinned[unread], q.registrations[unread], /*same_file=*/false);
    pinned.erase(pinned.begin() + static_cast<ptrdiff_t>(unread));
    RememberTicket(FdCloseInBackground(pinned.data(), pinned.size(), close_owner_, /*held_for_peer=*/true));
    if (pin != nullptr && pin->queued == 0) ClosePin(pin);
    return -EBADF;
  }
  q.fds = UniqueFds(std::move(pinned));
  q.pin = pin;
  if (pin != nullptr) pin->queued++;
  q.charge = q.data.size() + kQueuedSendOverhead;
  queued_bytes_ += q.charge;
  queue_.push_back(std::move(q));
  UpdatePoll();
  return kQueued;
}

void UnixSocket::PopQueued() {
  QueuedSend& q = queue_.front();
  queued_bytes_ -= q.charge;
  // A send that failed (or was cancelled) still holds its copies of the
  // sender's fds (a sent one dropped them with its first byte). A copy can
  // be its file's last reference, the sender having closed its own once the
  // send was queued, as it may, and that close can block for as long as the
  // file takes to go (a TCP socket with SO_LINGER and unsent data: its
  // linger time): the background closer takes them, never this thread,
  // which is an event loop's.
  DropSwappedCopies(&q);
  if (!q.fds.empty()) {
    std::vector<int> fds = q.fds.release();
    RememberTicket(FdCloseInBackground(fds.data(), fds.size(), close_owner_, /*held_for_peer=*/true));
  }
  // Its receiver's pin goes with the last datagram for it (Close closes them all).
  if (q.pin != nullptr && --q.pin->queued == 0 && !closed_) RetirePin(q.pin);
  queue_.pop_front();
}

size_t UnixSocket::DropSwappedCopies(QueuedSend* q) {
  if (q->fds.empty()) return 0;
  bool moved = FdTakeOvers() != q->takeovers;
  std::vector<int> fds = q->fds.release();
  size_t kept = 0;
  for (size_t i = 0; i < fds.size(); i++) {
    bool same = FdHoldsFile(fds[i], q->files[i]);
    // The same file and no take-over anywhere: held, without the lock.
    // Else the registry decides (and ends a registration whose file is gone).
    if ((same && !moved) || FdStillHeldLooked(fds[i], q->registrations[i], same)) {
      fds[kept] = fds[i];
      q->files[kept] = q->files[i];
      q->registrations[kept] = q->registrations[i];
      kept++;
    }
  }
  size_t dropped = fds.size() - kept;
  fds.resize(kept);
  q->files.resize(kept);
  q->registrations.resize(kept);
  q->fds = UniqueFds(std::move(fds));
  return dropped;
}

void UnixSocket::SetSendQueueLimits(size_t limit, size_t pause_reading_at) {
  queue_limit_ = limit;
  pause_reading_at_ = pause_reading_at;
  UpdatePoll();
}

void UnixSocket::StartReading() {
  if (closed_ || reading_) return;
  reading_ = true;
  UpdatePoll();
}

void UnixSocket::StopReading() {
  if (closed_ || !reading_) return;
  reading_ = false;
  UpdatePoll();
}

void UnixSocket::StartAccepting() {
  if (closed_ || accepting_) return;
  accepting_ = true;
  UpdatePoll();
}

void UnixSocket::StopAccepting() {
  if (closed_ || !accepting_) return;
  accepting_ = false;
  UpdatePoll();
}

void UnixSocket::Ref() {
  if (!closed_) SetRefed(true);
}

void UnixSocket::Unref() {
  if (!closed_) SetRefed(false);
}

// The pins are part of the socket: they keep the loop alive exactly when
// the socket does.
void UnixSocket::SetRefed(bool on) {
  refed_ = on;
  auto apply = [on](uv_poll_t* poll) {
    uv_handle_t* handle = reinterpret_cast<uv_handle_t*>(poll);
    if (on) {
      uv_ref(handle);
    } else {
      uv_unref(handle);
    }
  };
  apply(&poll_);
  for (Pin* pin : pins_) apply(&pin->poll);
  for (Pin* pin : {waker_, spare_}) {
    if (pin != nullptr) apply(&pin->poll);
  }
}

void UnixSocket::UpdatePoll() {
  if (closed_ || lost_) return;
  int events = 0;
  if (ReadingNow()) {
    events |= UV_READABLE;
  } else if (watch_hangup_) {
    events |= UV_DISCONNECT;
  }
  if (!queue_.empty() && waiting_on_ == nullptr) events |= UV_WRITABLE;
  if (events == poll_events_) return;
  // A change of events is an epoll_ctl on the number (uv_poll_start: a DEL,
  // then an ADD at the loop's next poll), which aborts in libuv when the
  // number holds a file epoll refuses (a regular file: EPERM) or none
  // (EBADF). The file is looked at (a statx) before each change: JS may
  // have closed the number and opened a file there since the last call on
  // it (a callback, then a pause or a stop of reading), which neither the
  // take-over counter (fdbridge's own new fds only) nor a send sees.
  if (events != 0 && Lost(true)) return;
  poll_events_ = events;
  if (events == 0) {
    uv_poll_stop(&poll_);
  } else {
    uv_poll_start(&poll_, events, OnPoll);
  }
}

void UnixSocket::OnPoll(uv_poll_t* handle, int status, int events) {
  UnixSocket* self = static_cast<UnixSocket*>(handle->data);
  // The number's events can outlive this socket's hold of it: epoll reports
  // a file by the number it was added under, for as long as the file is
  // open somewhere (a copy another process or fd holds), after the number
  // was closed and taken by another file. Those events are never acted on:
  // the read or write would go to the new file.
  if (self->closed_ || self->Lost(false)) return;
  if (status < 0) {
    // epoll reported EPOLLERR; libuv has already stopped the handle
    // (uv__poll_io). Let the syscalls below surface the real errno, then
    // re-arm whatever is still wanted.
    self->poll_events_ = 0;
    events = UV_READABLE | UV_WRITABLE;
  }
  if ((events & UV_WRITABLE) && !self->queue_.empty()) self->DoWrite();
  if (self->closed_ || self->lost_) return;
  if (events & UV_READABLE) {
    if (self->accepting_) {
      self->DoAccept();
    } else if (self->reading_) {
      self->DoRead();
    }
  }
  if (self->closed_ || self->lost_) return;
  if ((events & UV_DISCONNECT) && self->watch_hangup_ && !self->ReadingNow()) {
    // The peer is gone while we are not reading: say so now (see WatchHangup).
    self->watch_hangup_ = false;
    self->reading_ = false;
    RecvResult r{};
    r.status = RecvStatus::kEof;
    self->delegate_->OnReceiveError(r, nullptr, 0);
    if (self->closed_) return;
  }
  self->UpdatePoll();
}

void UnixSocket::WatchHangup(bool on) {
  watch_hangup_ = on;
  UpdatePoll();
}

void UnixSocket::DoWrite() {
  // Each completion runs JS, which may close the number and open another
  // file there: looked at again before each send (in memory).
  while (!queue_.empty() && !closed_ && waiting_on_ == nullptr && !Lost(false)) {
    QueuedSend& q = queue_.front();
    if (DropSwappedCopies(&q) != 0) {
      // A copy was closed behind our back since it was queued (its number
      // may hold another file now, the program's): the message fails as
      // for a closed fd, nothing of it sent.
      uint32_t id = q.id;
      PopQueued();  // hands the copies still held to the background closer
      CompleteSend(id, -EBADF);
      continue;
    }
    ssize_t n;
    if (q.pin != nullptr) {
      n = SendThroughPin(&q);
      if (n == -EAGAIN) return;  // waiting on the pin
    } else {
      n = ScmSend(sock_.get(), q.data.data() + q.offset, q.data.size() - q.offset, q.fds.data(), q.fds.size(),
                  q.to_len > 0 ? &q.to : nullptr, q.to_len, blocking_receive_ == 1);
      if (n == -EAGAIN) {
        full_sends_++;
        // Our own send buffer is full: wait for our fd to be writable. Else a
        // DGRAM receiver's queue is (net.unix.max_dgram_qlen), which poll on
        // our unconnected fd cannot show: a bound sender's waits on the waker
        // (an unbound sender's were pinned when queued: SendThroughPin).
        if (q.to_len == 0 || !(PollNow(sock_.get(), POLLOUT) & POLLOUT)) return;
        int werr = WaitForReceiver(q.to, q.to_len);
        if (werr == 0) return;
        n = werr;  // nobody to wait for (ECONNREFUSED: the receiver is gone): this send fails
      }
    }
    int err = n < 0 ? static_cast<int>(n) : 0;
    // EBADF or ENOTSOCK for our own socket's number: closed behind our
    // back? Then nothing more is sent (the loop's check ends it).
    if ((n == -EBADF || n == -ENOTSOCK) && q.to_len == 0) Lost(true);
    if (n >= 0) {
      q.fds.reset();  // sent with the first byte: a STREAM's rest goes without them
      q.offset += static_cast<size_t>(n);
      if (q.offset < q.data.size()) continue;  // partial STREAM write
    }
    if (err == 0) sent_from_queue_++;
    uint32_t id = q.id;
    bool addressed = q.to_len > 0;
    PopQueued();  // hands what it still holds to the background closer
    CompleteSend(id, err);
    if (!addressed && (err == -EPIPE || err == -ECONNRESET || err == -ENOTCONN)) {
      // The connection is broken: nothing queued behind this message can go
      // either. (Other errors, such as EMSGSIZE, concern this message only.)
      FailQueue(err);
      return;
    }
  }
}

void UnixSocket::FailQueue(int err) {
  while (!queue_.empty()) {
    uint32_t id = queue_.front().id;
    PopQueued();  // hands its copies of the fds to the background closer
    CompleteSend(id, err);
  }
}

void UnixSocket::DoRead() {
  // Stops as soon as the replies it made pause reading (SetSendQueueLimits):
  // the rest waits in the kernel, where it holds back the peer.
  // A thread waiting in WaitOnThread stops reading once its message is in
  // (the loop reads what came after it).
  if (reading_ && !closed_ && !ReadPaused()) ReceiveBuffer();
  // Each message runs JS, which may close the number and open another file
  // there: looked at again before each receive (in memory).
  // This read follows a message the filter said to read on after.
  bool read_on = false;
  for (int i = 0; i < kMaxReadsPerWakeup && reading_ && !closed_ && !ReadPaused() && (waiter_ == nullptr || !waiter_->done()) && !Lost(false); i++) {
    if (!MayReadMore()) return;
    RecvResult r;
    // Received and registered as one step on a socket whose fds are ours
    // (see ScmRecv, ReceiveOwnFds): a command's given fds, or fds a peer
    // sent unasked that the protocol layer closes.
    ScmRecv(sock_.get(), type_, recv_buf_, recv_len_, control_.get(), control_len_,
            recv_fds_.data(), max_fds_, &r, receive_from_ ? &sender_ : nullptr,
            own_socket() || receive_own_, Discard(), /*wait=*/false, receipt_tag_);
    if (read_on && filter_ != nullptr && (r.status == RecvStatus::kMessage || r.status == RecvStatus::kWouldBlock)) {
      filter_->ReadOnFound(r.status == RecvStatus::kMessage);
    }
    end_read_turn_ = false;
    if (!Deliver(&r)) return;
    if (end_read_turn_) return;
    read_on = r.status == RecvStatus::kMessage && filter_ != nullptr && !reset_pending_;
    if (read_on && !filter_->ReadOn()) return;
  }
}

bool UnixSocket::MayReadMore() const {
  // Nothing unsettled here or above: the closer's counts (a lock each) are not needed.
  if (read_budget_ == nullptr || !read_budget_->ChainUnsettled()) return true;
  size_t waiting = close_in_background_ ? FdBackgroundClosesOfPeerFds(close_owner_) : 0;
  return read_budget_->MayRead(FdBackgroundClosesOfPeerFds(), waiting);
}

bool UnixSocket::Deliver(RecvResult* received) {
  RecvResult& r = *received;
  RememberTicket(r.close_ticket);
  switch (r.status) {
    case RecvStatus::kWouldBlock:
      if (reset_pending_) {
        // Not expected after a reset (the peer is gone: EOF ends the
        // queue), but never swallow it.
        reading_ = false;
        r.status = RecvStatus::kError;
        r.err = -ECONNRESET;
        delegate_->OnReceiveError(r, nullptr, 0);
      }
      return false;
    case RecvStatus::kMessage:
      if (receive_from_) {
        delegate_->OnDatagram(recv_buf_, r.bytes, recv_fds_.data(), r.nfds, sender_);
        return true;
      }
      if (filter_ != nullptr && filter_->FilterMessage(recv_buf_, r.bytes, recv_fds_.data(), r.nfds)) return true;
      delegate_->OnMessage(recv_buf_, r.bytes, recv_fds_.data(), r.nfds);
      return true;
    case RecvStatus::kCtrunc:
    case RecvStatus::kTrunc:
      delegate_->OnReceiveError(r, recv_buf_, r.bytes < recv_len_ ? r.bytes : recv_len_);
      return true;
    case RecvStatus::kError:
      // Closed behind our back? The socket lets go of the number before
      // the delegate hears of the error (and may change the poll).
      if (r.err == -EBADF || r.err == -ENOTSOCK) Lost(true);
      if (r.err == -ECONNRESET && !reset_pending_ && type_ != SOCK_DGRAM) {
        // Linux: a peer that closes with our data unread sets ECONNRESET
        // on this socket (unix_release_sock), and recvmsg returns that
        // pending error (sock_error in __skb_try_recv_datagram) before the
        // messages the peer sent earlier, which stay queued. They were
        // sent (a reply, with its fds): deliver them, then the reset.
        // The peer is shut down, so the queue ends in EOF, not EAGAIN.
        reset_pending_ = true;
        return true;
      }
      reading_ = false;
      delegate_->OnReceiveError(r, nullptr, 0);
      return false;
    case RecvStatus::kEof:
      reading_ = false;
      if (reset_pending_) {
        r.status = RecvStatus::kError;
        r.err = -ECONNRESET;
      }
      delegate_->OnReceiveError(r, nullptr, 0);
      return false;
  }
  return false;
}

void UnixSocket::DoAccept() {
  for (int i = 0; i < kMaxReadsPerWakeup && accepting_ && !closed_ && !Lost(false); i++) {
    int fd = SockAccept(sock_.get());
    if (fd == -EAGAIN) return;
    if (fd == -ECONNABORTED) continue;
    if (fd < 0) {
      // EMFILE and friends: stop rather than spin on a readiness we cannot
      // consume; the delegate decides whether to start again.
      accepting_ = false;
      delegate_->OnAccept(-1, fd);
      return;
    }
    delegate_->OnAccept(fd, 0);
  }
}

uint64_t UnixSocket::CloseInBackground(const int* fds, size_t n) {
  uint64_t ticket = FdCloseInBackground(fds, n, close_owner_, /*held_for_peer=*/true);
  RememberTicket(ticket);
  return ticket;
}

int UnixSocket::CloseClientFdsInBackground(const int* fds, size_t n, const std::optional<FdIdentity>* expected, const uint64_t* installs,
                                           uint64_t* ticket, int* refused) {
  int r = FdCloseClientFdsInBackground(fds, n, close_owner_, expected, installs, ticket, refused);
  if (r == 0) RememberTicket(*ticket);
  return r;
}

uint64_t UnixSocket::CloseGivenInBackground(const int* fds, size_t n, uint64_t given_to) {
  uint64_t ticket = FdCloseGivenInBackground(fds, n, close_owner_, given_to);
  RememberTicket(ticket);
  return ticket;
}

void UnixSocket::RememberTicket(uint64_t ticket) {
  if (ticket == 0) return;
  close_tickets_.push_back(ticket);
  // Amortized: a socket that closes in background all its life keeps only
  // the tickets not yet done, and looks at each one a bounded number of times.
  if (close_tickets_.size() >= 2 * tickets_kept_ + 16) {
    FdDropDoneTickets(&close_tickets_);
    tickets_kept_ = close_tickets_.size();
  }
}

std::vector<uint64_t> UnixSocket::BackgroundCloseTickets() {
  FdDropDoneTickets(&close_tickets_);
  tickets_kept_ = close_tickets_.size();
  return close_tickets_;
}

void UnixSocket::CompleteSend(uint32_t id, int err) {
  if (filter_ != nullptr && filter_->FilterSendComplete(id, err)) return;
  delegate_->OnSendComplete(id, err);
}

void UnixSocket::Close(bool shut_down, void (*on_freed)(void*), void* arg) {
  if (closed_) return;
  closed_ = true;
  reading_ = false;
  accepting_ = false;
  on_freed_ = on_freed;
  on_freed_arg_ = arg;
  polled_.Forget();
  // One closed behind our back is not closed again: its number is someone
  // else's file now, or none. Looked at before the poll's close, which then
  // leaves the number's epoll entry alone (LetGo).
  bool lost = Lost(true);
  // uv_close stops the poll and removes the fd from epoll synchronously, so
  // closing the fd right after is safe (libuv: never close a polled fd).
  pending_closes_++;
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnClosed);
  if (lost) {
    sock_.release();
  } else if (shut_down && !close_in_background_) {
    CloseEmptied(sock_.release());
  } else {
    // As is (see Close). The socket is ours, not a peer's fd: it never
    // counts against the peers' fd totals.
    int fd = sock_.release();
    RememberTicket(FdCloseInBackground(&fd, 1, close_owner_, /*held_for_peer=*/false));
  }
  waiting_on_ = nullptr;
  // Before the completions below run JS: a pin is not open, nor polled, while
  // the program may close numbers and make new polls (PopQueued leaves a
  // closing pin alone; it is freed by its poll's close callback).
  ClosePins();
  FailQueue(-ECANCELED);
  if (filter_ != nullptr) {
    Filter* filter = filter_;
    filter_ = nullptr;
    filter->OnSocketClose();
  }
}

void UnixSocket::CloseEmptied(int fd) {
  if (!listening_ || type_ == SOCK_DGRAM) {
    std::vector<uint64_t> tickets;
    ScmCloseConnection(fd, type_, receives_own(), oob_inline_, close_owner_, &tickets);
    for (uint64_t t : tickets) RememberTicket(t);
    return;
  }
  // No connect queues behind the shutdown (unix_stream_connect checks the
  // listener's RCV_SHUTDOWN under the lock it queues under), so the accepts
  // end. Each accepted connection is emptied and closed like a socket of
  // ours: its client sees end of file (or EPIPE), as it would have at the
  // listener's close (ECONNRESET there).
  int r = shutdown(fd, SHUT_RD) == 0 ? 0 : -errno;
  // Polled first: a listening socket a caller wrapped may be blocking, and
  // accept4 would then wait once the backlog is empty.
  while (r == 0 && (PollNow(fd, POLLIN) & POLLIN) != 0) {
    int c = SockAccept(fd);
    if (c == -EAGAIN) break;
    if (c == -ECONNABORTED) continue;
    if (c < 0) {
      r = c;
      break;
    }
    CloseAccepted(c);
  }
  if (r == 0) {
    UniqueFd(fd).reset();
  } else {
    shutdown(fd, SHUT_RDWR);
    RememberTicket(FdCloseInBackground(&fd, 1, close_owner_, /*held_for_peer=*/false));
  }
}

void UnixSocket::CloseAccepted(int fd) {
  std::vector<uint64_t> tickets;
  ScmCloseConnection(fd, type_, FdIsOwned(fd), /*oob_inline=*/false, close_owner_, &tickets);
  for (uint64_t t : tickets) RememberTicket(t);
}

void UnixSocket::OnClosed(uv_handle_t* handle) {
  static_cast<UnixSocket*>(handle->data)->HandleClosed();
}

void UnixSocket::HandleClosed() {
  // A pin closes whenever its last datagram leaves, the socket open or not.
  if (--pending_closes_ > 0 || !closed_) return;
  void (*cb)(void*) = on_freed_;
  void* arg = on_freed_arg_;
  delete this;
  if (cb != nullptr) cb(arg);
}

}  // namespace fdbridge
