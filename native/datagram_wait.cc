// A DGRAM sender's datagrams that wait for a full receiver: where they go
// once it has room, and how the event loop sleeps until then.
//
// An unconnected DGRAM socket polls writable whenever its own send buffer
// has room: unix_dgram_poll looks at a receiver's queue only for a
// *connected* peer, so waiting on our own fd for a full receiver would spin.
// A socket connected to that receiver does show it: its POLLOUT follows the
// receiver's queue (unix_dgram_peer_wake_me hooks it onto the receiver's
// peer_wait, which every dequeue and the receiver's close wake).
//
// And sendto(name) resolves the name at each try: once the receiver is
// closed, another socket may have bound its name (anyone, for an abstract
// name; another user included), and a datagram sent by name then would give
// it the data and the fds. A socket connected to the receiver names it for
// good: a send through it fails (ECONNREFUSED) once it is gone.
//
// So an unbound sender's datagram that waits is pinned, when SendTo queues
// it, to the receiver its name has then: a Pin, one connected socket per
// receiver shared by the datagrams queued for that name, goes out through it
// and waits on it. The receiver sees no sender's address either way. A bound
// sender's datagrams must carry its address (the receiver answers to it):
// they go by name, and wait on the waker, a pin connected afresh at each
// wait to the receiver the name has then.
#include "unix_socket.h"

#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "scm_rights.h"
#include "sock_ops.h"

namespace fdbridge {

bool UnixSocket::SendsUnbound() {
  if (bound_) return false;
  struct sockaddr_un own;
  socklen_t len = sizeof(own);
  if (getsockname(sock_.get(), reinterpret_cast<struct sockaddr*>(&own), &len) != 0) return false;
  // Bound by the kernel on a send (autobind, SO_PASSCRED) or by bind(2).
  bound_ = len > offsetof(struct sockaddr_un, sun_path);
  return !bound_;
}

int UnixSocket::PinFor(const struct sockaddr_un& to, socklen_t to_len, Pin** out) {
  // A path is the socket file it names now (stat: from the working
  // directory, through symlinks), an abstract name itself.
  bool by_file = to.sun_path[0] != '\0';
  struct stat file;
  if (by_file && stat(to.sun_path, &file) != 0) return -errno;  // as sendto would fail
  // Queued for this receiver already: the one those wait for. (A receiver
  // that took the name since only gets what is sent once they are gone.)
  for (Pin* pin : pins_) {
    if (!pin->fd || pin->gone) continue;
    bool same = by_file ? pin->by_file && pin->file_dev == file.st_dev && pin->file_ino == file.st_ino
                        : !pin->by_file && pin->to_len == to_len && memcmp(&pin->to, &to, to_len) == 0;
    if (same) {
      *out = pin;
      return 0;
    }
  }
  if (pins_.size() >= kMaxWaitingReceivers) return kTooManyReceivers;
  Pin* pin;
  int r = MakePin(&pin);
  if (r != 0) return r;
  pins_.push_back(pin);
  r = ConnectPin(pin, to, to_len);
  if (r != 0) {
    ClosePin(pin);
    return r;
  }
  pin->by_file = by_file;
  if (by_file) {
    pin->file_dev = file.st_dev;
    pin->file_ino = file.st_ino;
  }
  *out = pin;
  return 0;
}

int UnixSocket::MakePin(Pin** out) {
  // The last one retired, if it still holds its socket: connected again by
  // the caller (a DGRAM socket's connect may change its peer), so that a
  // burst of waits does not make and close a socket each.
  if (spare_ != nullptr) {
    Pin* spare = spare_;
    spare_ = nullptr;
    if (PinHolds(spare)) {
      spare->gone = false;
      spare->by_file = false;
      *out = spare;
      return 0;
    }
    ClosePin(spare);
  }
  // Ours, so numbered at or above the floor (fd_ops.h: FdFloor), where a
  // number the caller closed and still names cannot land on it.
  int w = SockOpen(SOCK_DGRAM, /*own=*/true);
  if (w < 0) return w;
  UniqueFd fd(w);
  // Polled as every fd of fdbridge's is (PolledNumber): closed behind our
  // back, it is let go of as they are.
  std::unique_ptr<Pin> pin(new Pin(this));
  int r = pin->number.Init(poll_.loop, w);
  if (r != 0) return r;
  pin->poll.data = pin.get();
  pin->fd = std::move(fd);
  if (!refed_) uv_unref(reinterpret_cast<uv_handle_t*>(&pin->poll));
  *out = pin.release();
  return 0;
}

int UnixSocket::ConnectPin(Pin* pin, const struct sockaddr_un& to, socklen_t to_len) {
  int r = SockConnectTo(pin->fd.get(), &to, to_len);
  if (r != 0) return r;
  // The datagrams sent through it may be as large as our own socket takes
  // (a DGRAM send larger than the sender's SO_SNDBUF fails EMSGSIZE).
  int sndbuf = 0;
  socklen_t len = sizeof(sndbuf);
  if (getsockopt(sock_.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0) {
    int half = sndbuf / 2;  // the kernel doubles what it is given
    setsockopt(pin->fd.get(), SOL_SOCKET, SO_SNDBUF, &half, sizeof(half));
  }
  pin->to = to;
  pin->to_len = to_len;
  return 0;
}

void UnixSocket::RetirePin(Pin* pin) {
  ErasePin(pin);
  if (spare_ == nullptr && PinHolds(pin)) {
    StopPinPoll(pin);
    spare_ = pin;
  } else {
    ClosePin(pin);
  }
}

void UnixSocket::ErasePin(Pin* pin) {
  for (size_t i = 0; i < pins_.size(); i++) {
    if (pins_[i] == pin) {
      pins_[i] = pins_.back();
      pins_.pop_back();
      break;
    }
  }
}

void UnixSocket::ClosePin(Pin* pin) {
  ErasePin(pin);
  if (waker_ == pin) waker_ = nullptr;
  if (spare_ == pin) spare_ = nullptr;
  if (waiting_on_ == pin) waiting_on_ = nullptr;
  // Closed behind our back? Then neither the poll's close nor ours reaches
  // the file at its number now.
  pin->number.LetGoIfGone(&pin->fd);
  pin->polling = false;  // uv_close stops it
  pending_closes_++;
  uv_close(reinterpret_cast<uv_handle_t*>(&pin->poll), OnPinClosed);
  pin->fd.reset();
}

void UnixSocket::ClosePins() {
  while (!pins_.empty()) ClosePin(pins_.back());
  if (waker_ != nullptr) ClosePin(waker_);
  if (spare_ != nullptr) ClosePin(spare_);
}

bool UnixSocket::PinHolds(Pin* pin) {
  // Its number may have been closed behind our back and taken by another
  // file since (a statx), which must never get a datagram: let go of.
  if (pin->fd && !pin->number.Holds(pin->fd.get())) {
    pin->number.LetGo();  // stops its poll
    pin->fd.release();
    pin->polling = false;
  }
  return static_cast<bool>(pin->fd);
}

void UnixSocket::StopPinPoll(Pin* pin) {
  if (!pin->polling) return;
  uv_poll_stop(&pin->poll);
  pin->polling = false;
}

void UnixSocket::OnPinClosed(uv_handle_t* handle) {
  Pin* pin = static_cast<Pin*>(handle->data);
  UnixSocket* self = pin->owner;
  delete pin;
  self->HandleClosed();
}

ssize_t UnixSocket::SendThroughPin(QueuedSend* q) {
  Pin* pin = q->pin;
  if (!PinHolds(pin)) return -EBADF;  // only datagrams that waited pay its statx
  ssize_t n = ScmSend(pin->fd.get(), q->data.data(), q->data.size(), q->fds.data(), q->fds.size(), nullptr, 0, false);
  if (n == -EAGAIN) {
    full_sends_++;
    WaitOn(pin);  // that receiver is full (or the pin's buffer): room wakes it
  }
  // The receiver is gone (ECONNREFUSED; the kernel then disconnects the pin:
  // ENOTCONN, the same outcome).
  if (n == -ENOTCONN || n == -ECONNREFUSED) {
    pin->gone = true;
    return -ECONNREFUSED;
  }
  return n;
}

int UnixSocket::WaitForReceiver(const struct sockaddr_un& to, socklen_t to_len) {
  if (waker_ != nullptr && !PinHolds(waker_)) ClosePin(waker_);
  if (waker_ == nullptr) {
    int r = MakePin(&waker_);
    if (r != 0) return r;
  }
  // Connected afresh for each wait: the head of the queue decides which receiver.
  int r = ConnectPin(waker_, to, to_len);
  if (r != 0) return r;
  WaitOn(waker_);
  return 0;
}

void UnixSocket::WaitOn(Pin* pin) {
  waiting_on_ = pin;
  // A poll started already is left as it is: uv_poll_start deletes the
  // number's epoll entry and adds it again at the loop's next poll, where a
  // number the program has closed by then aborts libuv (EBADF). (From
  // stopped, that risk is every poll's: see UpdatePoll.)
  if (pin->polling) return;
  uv_poll_start(&pin->poll, UV_WRITABLE, OnPinPoll);
  pin->polling = true;
}

void UnixSocket::OnPinPoll(uv_poll_t* handle, int status, int events) {
  Pin* pin = static_cast<Pin*>(handle->data);
  UnixSocket* self = pin->owner;
  if (self->closed_ || !pin->fd) return;
  if (self->waiting_on_ == pin) {
    self->waiting_on_ = nullptr;
    self->DoWrite();  // may wait on it again, retire it (its last datagram left) or close it
    self->UpdatePoll();
  }
  if (self->waiting_on_ != pin) self->StopPinPoll(pin);
}

void UnixSocket::OnPinTaken(void* owner, const FdIdentity& file, bool known) {
  Pin* pin = static_cast<Pin*>(owner);
  UnixSocket* self = pin->owner;
  if (self->closed_ || !pin->number.YieldTo(file, known, &pin->fd)) return;
  pin->polling = false;  // LetGo stopped it
  if (self->waiting_on_ != pin) return;
  // The datagram waiting on it fails from the socket's own poll (writable:
  // the send is tried again, and finds the pin let go of: EBADF; a waker is
  // made again), not from inside the poll being made for someone else.
  self->waiting_on_ = nullptr;
  self->UpdatePoll();
}

}  // namespace fdbridge
