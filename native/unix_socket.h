// One Unix domain socket driven by the event loop: a non-blocking fd, one
// uv_poll_t, a queue of sends waiting for writability, and a receive loop.
// Uses libuv but no Node-API: events go to a Delegate (the binding layer).
#ifndef FDBRIDGE_UNIX_SOCKET_H_
#define FDBRIDGE_UNIX_SOCKET_H_

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <deque>
#include <unordered_set>
#include <memory>
#include <vector>

#include "scm_rights.h"

namespace fdbridge {

class UnixSocket {
 public:
  class Delegate {
   public:
    virtual ~Delegate() = default;
    // A message arrived. The delegate owns fds[0..nfds) from here on.
    virtual void OnMessage(const char* data, size_t len, const int* fds, size_t nfds) = 0;
    // A datagram arrived on a socket that receives with the sender's address
    // (ReceiveFrom): as OnMessage, with who sent it.
    virtual void OnDatagram(const char* data, size_t len, const int* fds, size_t nfds,
                            const ScmSender& sender) {
      OnMessage(data, len, fds, nfds);
    }
    // A receive failed. kCtrunc/kTrunc leave the socket readable (the
    // offending message is gone, its fds closed; `data` holds what of its
    // bytes arrived, min(result.bytes, buffer size)); kEof and kError stop
    // reading.
    virtual void OnReceiveError(const RecvResult& result, const char* data, size_t len) = 0;
    // A listening socket accepted `fd` (owned by the delegate), or failed
    // with -errno in `err` (accepting then stops).
    virtual void OnAccept(int fd, int err) = 0;
    // A send that Send() queued has left (err == 0) or failed (-errno).
    virtual void OnSendComplete(uint32_t id, int err) = 0;
    // A DUP_OK for a request registered with AwaitDupReply (one fd): its id
    // and the fd's number on the other side.
    virtual void OnDupReply(uint32_t id, int32_t fd) = 0;
  };

  // Takes ownership of `fd` (a non-blocking AF_UNIX socket of `type`).
  // Returns nullptr and sets *err when the poll handle cannot be set up; the fd
  // then still belongs to the caller (like every failed constructor's argument).
  //
  // Received data lands in a buffer of `recv_buffer_size` bytes: the
  // socket's own, or `external_buffer` when given (the caller keeps that
  // memory alive until Close(); the binding uses it to hand JS a view of a
  // reused buffer instead of a fresh copy per message).
  static UnixSocket* Create(uv_loop_t* loop, int fd, int type, size_t max_fds,
                            size_t recv_buffer_size, Delegate* delegate, int* err,
                            char* external_buffer = nullptr);

  // Sends data and fds (borrowed: the caller keeps its fds). Returns 0 when
  // the kernel took the whole message now, 1 when it was queued until the
  // socket is writable (OnSendComplete(id) follows), or -errno with nothing
  // queued: EINVAL for more than 253 fds or a 0-byte STREAM send with fds
  // (the kernel would silently drop them), EBADF for a bad fd, EPIPE, ...
  // A queued message holds its own duplicates of the fds, so the caller may
  // close or reuse its fd numbers at once without the wrong file being sent.
  int Send(const char* data, size_t len, const int* fds, size_t nfds, uint32_t id);

  // Send on an unconnected DGRAM socket: sendto(2) the address `to`. A full
  // receiver (EAGAIN) makes the message wait in the same send queue as
  // Send's when `wait_when_full`; otherwise the call returns -EAGAIN with
  // nothing queued, and does so whenever earlier sends are still waiting
  // (a send never overtakes another). An error that concerns the
  // destination (ECONNREFUSED: nobody bound there any more, EPERM, ...)
  // fails that message only.
  int SendTo(const struct sockaddr_un* to, socklen_t to_len, const char* data, size_t len,
             const int* fds, size_t nfds, uint32_t id, bool wait_when_full);

  // Received datagrams go to OnDatagram, with the sender's address and (with
  // SO_PASSCRED on the socket) credentials.
  void ReceiveFrom(bool on) { receive_from_ = on; }
  void StartReading();
  void StopReading();
  void StartAccepting();
  void StopAccepting();
  void Ref();
  void Unref();

  // Closes the fd, stops polling and fails queued sends with ECANCELED
  // (through OnSendComplete). The object deletes itself once libuv has closed
  // the poll handle; `on_freed(arg)` runs then. Idempotent.
  void Close(void (*on_freed)(void*) = nullptr, void* arg = nullptr);

  // The command's side of fdbridge's frame protocol, answered here without
  // a trip into JS: while on, every well-formed DUP request (an 8-byte
  // header of type 4 with zero flags, carrying 1..253 fds) is answered at
  // once with a DUP_OK listing the fds' numbers, and the fds join the
  // "given" set. Every other message still goes to the delegate, in order.
  // The given set is the connection's ledger: fds in it belong to the
  // connection until adopted (AdoptGiven) and are closed by SweepGiven and
  // by Close (a socket closes what it received and nobody claimed).
  void ServeDuplications(bool on) { serve_dups_ = on; }
  void AddGiven(int fd) { given_.insert(fd); }
  bool AdoptGiven(int fd) { return given_.erase(fd) != 0; }
  size_t SweepGiven();
  size_t given_count() const { return given_.size(); }

  // The client's side: a one-fd DUP request whose reply is taken here. A
  // well-formed DUP_OK naming one fd for an awaited id goes to OnDupReply
  // instead of OnMessage; anything else (a wrong count, an unknown id) still
  // reaches OnMessage, where the protocol layer treats it as a violation.
  void AwaitDupReply(uint32_t id) { awaited_.insert(id); }
  void ForgetAwaited() { awaited_.clear(); }
  void StopAwaiting(uint32_t id) { awaited_.erase(id); }
  uint64_t served_dups() const { return served_dups_; }

  int fd() const { return fd_; }
  int type() const { return type_; }
  bool closed() const { return closed_; }
  size_t queued_sends() const { return queue_.size(); }
  // sendmsg calls that found the socket, or a DGRAM receiver, full (EAGAIN):
  // a wait that sleeps adds one per wake-up, a wait that spins one per turn.
  uint64_t full_sends() const { return full_sends_; }

 private:
  struct QueuedSend {
    std::vector<char> data;
    size_t offset;
    std::vector<int> fds;  // our own close-on-exec duplicates
    uint32_t id;
    struct sockaddr_un to;  // the destination when to_len > 0 (SendTo)
    socklen_t to_len;
  };

  UnixSocket(int fd, int type, size_t max_fds, size_t recv_buffer_size, Delegate* delegate,
             char* external_buffer);
  ~UnixSocket();
  UnixSocket(const UnixSocket&) = delete;
  UnixSocket& operator=(const UnixSocket&) = delete;

  int Enqueue(const struct sockaddr_un* to, socklen_t to_len, const char* data, size_t len,
              size_t offset, const int* fds, size_t nfds, uint32_t id);
  int WaitForReceiver(const struct sockaddr_un& to, socklen_t to_len);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnWakerPoll(uv_poll_t* handle, int status, int events);
  static void OnClosed(uv_handle_t* handle);
  void UpdatePoll();
  void DoRead();
  void DoAccept();
  void DoWrite();
  void FailQueue(int err);

  uv_poll_t poll_;
  int fd_;
  int type_;
  size_t max_fds_;
  Delegate* delegate_;
  bool reading_ = false;
  // The peer closed with our data unread (ECONNRESET) while messages it had
  // sent were still queued here: they are read first, the reset reported
  // at their end (see DoRead).
  bool reset_pending_ = false;
  bool accepting_ = false;
  bool closed_ = false;
  int poll_events_ = 0;
  std::deque<QueuedSend> queue_;
  std::vector<char> own_buf_;  // empty when an external buffer is used
  char* recv_buf_;
  size_t recv_len_;
  std::unique_ptr<char[]> control_;  // aligned for cmsghdr by operator new
  size_t control_len_;
  std::vector<int> recv_fds_;
  bool serve_dups_ = false;
  uint64_t served_dups_ = 0;
  std::unordered_set<int> given_;
  std::vector<char> reply_buf_;
  bool TryServeDup(const char* data, size_t len, const int* fds, size_t nfds);
  std::unordered_set<uint32_t> awaited_;
  bool TryDupReply(const char* data, size_t len, size_t nfds);
  // Sends to a full DGRAM receiver wait on the waker: an unbound DGRAM
  // socket connected to that receiver, polled for writability (see
  // WaitForReceiver). Made on first need, reconnected per wait.
  uv_poll_t waker_poll_;
  int waker_fd_ = -1;
  bool waiting_receiver_ = false;
  bool receive_from_ = false;
  ScmSender sender_;
  int pending_closes_ = 0;
  uint64_t full_sends_ = 0;  // poll handles still closing (the object is freed at 0)
  void (*on_freed_)(void*) = nullptr;
  void* on_freed_arg_ = nullptr;
};

}  // namespace fdbridge

#endif  // FDBRIDGE_UNIX_SOCKET_H_
