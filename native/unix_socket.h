// One Unix domain socket driven by the event loop: a non-blocking fd, one
// uv_poll_t, a queue of sends waiting for writability, and a receive loop.
// Uses libuv but no Node-API: events go to a Delegate (the binding layer).
#ifndef FDBRIDGE_UNIX_SOCKET_H_
#define FDBRIDGE_UNIX_SOCKET_H_

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "fd_budget.h"
#include "polled_number.h"
#include "scm_rights.h"
#include "unique_fd.h"

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
    // The socket is about to read for the first time: memory of `len` bytes
    // for received data that lives until Close(), or nullptr for the
    // socket's own.
    virtual char* ProvideReceiveBuffer(size_t len) { return nullptr; }
  };

  // Takes ownership of `fd` (a non-blocking AF_UNIX socket of `type`).
  // Returns nullptr and sets *err when the poll handle cannot be set up; the fd
  // then still belongs to the caller (like every failed constructor's argument).
  //
  // Received data lands in a buffer of `recv_buffer_size` bytes: the
  // socket's own, or `external_buffer` when given (the caller keeps that
  // memory alive until Close(); the binding uses it to hand JS a view of a
  // reused buffer instead of a fresh copy per message). Without one it is
  // made when the socket first reads (Delegate::ProvideReceiveBuffer, else
  // its own): a socket that never reads (a refused peer's, closed unread)
  // costs no buffer.
  static UnixSocket* Create(uv_loop_t* loop, int fd, int type, size_t max_fds,
                            size_t recv_buffer_size, Delegate* delegate, int* err,
                            char* external_buffer = nullptr);

  // What Send returns besides -errno.
  static constexpr int kSent = 0;
  static constexpr int kQueued = 1;
  static constexpr int kQueueFull = 2;

  // What one queued message is charged besides its data bytes: the queue
  // entry and the binding's callback record (the bound is on memory, and a
  // burst of tiny frames costs far more than their bytes).
  static constexpr size_t kQueuedSendOverhead = 256;

  // Sends data and fds (borrowed: the caller keeps its fds). Returns kSent
  // when the kernel took the whole message now, kQueued when it was queued
  // until the socket is writable (OnSendComplete(id) follows), kQueueFull
  // with nothing sent or queued when the send queue already holds its limit
  // (see SetSendQueueLimits), or -errno with nothing queued: EINVAL for more
  // than 253 fds or a 0-byte STREAM send with fds (the kernel would silently
  // drop them), EBADF for a bad fd, EPIPE, ...
  // A queued message holds its own duplicates of the fds, so the caller may
  // close or reuse its fd numbers at once without the wrong file being sent.
  // Messages leave in the order Send was called: once anything is queued,
  // later messages queue behind it instead of trying the kernel first.
  // `exempt`: queued even past the limit, for the few small messages that
  // release what earlier ones took (their number is bounded by those).
  int Send(const char* data, size_t len, const int* fds, size_t nfds, uint32_t id, bool exempt = false);

  // Send on an unconnected DGRAM socket: sendto(2) the address `to`. A full
  // receiver (EAGAIN) makes the message wait in the same send queue as
  // Send's when `wait_when_full`; otherwise the call returns -EAGAIN with
  // nothing queued, and does so whenever earlier sends are still waiting
  // (a send never overtakes another). An error that concerns the
  // destination (ECONNREFUSED: nobody bound there any more, EPERM, ...)
  // fails that message only. An unbound sender's queued datagram goes to
  // the receiver `to` names now or to none (see datagram_wait.cc);
  // kQueueFull also when the queue already waits for kMaxWaitingReceivers.
  int SendTo(const struct sockaddr_un* to, socklen_t to_len, const char* data, size_t len,
             const int* fds, size_t nfds, uint32_t id, bool wait_when_full);

  // Received datagrams go to OnDatagram, with the sender's address and (with
  // SO_PASSCRED on the socket) credentials.
  void ReceiveFrom(bool on) { receive_from_ = on; }

  // The fds this socket receives from now on are `tag`'s receipts
  // (FdInstalledReceipt), for the command that made it to claim.
  void RecordReceiptsFor(uint64_t tag) { receipt_tag_ = tag; }

  // While this socket does not read (StopReading, or a reading pause, see
  // SetSendQueueLimits), a peer that hangs up (EPOLLRDHUP) is reported at
  // once as end-of-file through OnReceiveError, its unread messages left
  // unread (Close releases their fds): for a side that only answers
  // requests, which has nobody left to answer, and which would otherwise
  // never learn of the hangup while it waits to read again.
  void WatchHangup(bool on);

  // Bounds the send queue, the only memory a peer that does not read can
  // make this side hold (libuv's write queue and Node's stream buffer grow
  // without limit; a highWaterMark is only advice).
  // - `limit`: Send refuses (kQueueFull) while the queue holds `limit` bytes
  //   or more, each message charged its data plus kQueuedSendOverhead. A
  //   message is never refused into an empty queue, so one message larger
  //   than the limit still goes out; the queue never exceeds limit plus one
  //   message.
  // - `pause_reading_at`: while the queue holds more than this, the socket
  //   does not read, even when StartReading asked it to; it reads again once
  //   the queue drains to it. A side that answers every message it reads
  //   (a server) passes backpressure on this way: the peer's messages wait
  //   in the kernel, then in the peer's own bounded queue. SIZE_MAX: never.
  //   The other side must keep reading whatever its queue holds, or the two
  //   would wait for each other.
  void SetSendQueueLimits(size_t limit, size_t pause_reading_at);
  size_t queued_bytes() const { return queued_bytes_; }
  size_t send_queue_limit() const { return queue_limit_; }
  bool send_queue_full() const { return !queue_.empty() && queued_bytes_ >= queue_limit_; }

  void StartReading();
  void StopReading();
  void StartAccepting();
  void StopAccepting();
  void Ref();
  void Unref();

  // Closes the fd, stops polling, fails queued sends with ECANCELED
  // (through OnSendComplete), then tells the filter (OnSocketClose). The
  // object deletes itself once libuv has closed the poll handle;
  // `on_freed(arg)` runs then. Idempotent.
  //
  // close(2) of a socket drops what its receive queue still holds on the
  // calling thread (an event loop's, or a worker's teardown's), and the
  // last close of an fd a peer queued there can block for as long as the
  // peer chose (a TCP socket with SO_LINGER and unsent data). So, with
  // `shut_down`, unless it closes in background (UseBackgroundCloser), the
  // socket is shut down and emptied first (ScmDrainForClose), the fds that
  // were queued handed to the background closer, and a listening socket
  // refuses new connections (shutdown(SHUT_RD): connect gets ECONNREFUSED)
  // and accepts and empties the ones not yet accepted, whose queues the
  // close would drop as well. The close(2) itself stays here: when Close
  // returns the peer has its end of file (or EPIPE), and a name's connects
  // are refused. A socket that cannot be emptied for certain (a receive or
  // accept failed: EMFILE, say) is shut down for both directions, which
  // gives the peer the same, and closed in background.
  //
  // Without `shut_down` (the socket's file is shared with another holder
  // that goes on using it: a listening socket systemd passed, LISTEN_FDS; a
  // connection whose fd was sent to another process, or duplicated for
  // another thread), or when it closes in background, only this copy is
  // closed, as is: nothing shut down (shutdown(2) acts on the socket, every
  // holder's) and nothing read (the queue is the other holder's), on the
  // background closer, its ticket remembered (BackgroundCloseTickets): if
  // the other copies are gone after all, it is the last close and drops
  // what is queued.
  void Close(bool shut_down = true, void (*on_freed)(void*) = nullptr, void* arg = nullptr);

  // A filter sees the socket's messages and send completions before the
  // delegate does, and its close: a protocol layered on this socket (the
  // frame channel) takes what is its own and leaves the rest to the
  // delegate, in order. At most one; nullptr removes it.
  class Filter {
   public:
    virtual ~Filter() = default;
    // true: the filter took the message (fds[0..nfds) are its own from
    // here on); false: the delegate gets it. It may close the socket.
    virtual bool FilterMessage(const char* data, size_t len, const int* fds, size_t nfds) = 0;
    // true: the completion of a send the filter made (the delegate hears nothing of it).
    virtual bool FilterSendComplete(uint32_t id, int err) = 0;
    // The socket is closing (queued sends have failed): the filter's last
    // event; it is detached after it.
    virtual void OnSocketClose() = 0;
    // Asked after each message the event loop reads: false ends this
    // wake-up's reading there, leaving what else is queued (if anything)
    // for the next turn of the loop, whose poll is level-triggered: for a
    // protocol that knows nothing more is due (a client with no request
    // pending) or that answers one message per turn, which saves the read
    // that would only find the socket empty (EAGAIN).
    virtual bool ReadOn() { return true; }
    // What the read after a message the filter said to read on after
    // found: the next message (true) or the socket empty (false, EAGAIN).
    // Told before the message is delivered; not told of other outcomes
    // (an end, an error).
    virtual void ReadOnFound(bool /*message*/) {}
  };
  void SetFilter(Filter* filter) { filter_ = filter; }

  // Called by the delegate from OnMessage: reading stops for this wake-up
  // after the message (what else is queued is read on the next turn of the
  // loop), for a delegate that hands the message on later (MessageBatch),
  // whose next message must not be read before that one is handled.
  void EndReadTurn() { end_read_turn_ = true; }

  // An id for Send/SendTo whose completion someone awaits: never 0, which
  // is for sends whose completion nobody awaits, and unique among the
  // socket's queued sends (ids are shared by the delegate and the filter).
  uint32_t NewSendId() {
    uint32_t id = next_send_id_++;
    if (next_send_id_ == 0) next_send_id_ = 1;
    return id;
  }

  // The socket's own close(2) goes to the background closer
  // (FdCloseInBackground, as `owner`'s) from now on, as is, with no
  // shutdown and nothing drained (see Close): for a protocol layer that
  // answers for its peer's end of file itself (the helper daemon). The fds
  // of a message that arrives truncated go there as `owner`'s either way
  // (Discard): fds a peer sent can block their last close (a lingering TCP
  // socket).
  void UseBackgroundCloser(bool on, uint64_t owner = 0) {
    close_in_background_ = on;
    close_owner_ = owner;
  }

  // How the fds this socket receives and nobody takes are closed (a
  // truncated message's, a batch's that cannot reach JS): by the background
  // closer as this socket's owner's, always. They come from a peer, and the
  // last close of one can block (a lingering TCP socket).
  ScmDiscard Discard() const { return ScmDiscard{true, close_owner_}; }
  uint64_t background_close_owner() const { return close_owner_; }

  // The budget the fds this socket receives are charged to (a helper
  // daemon's per-uid one, shared by that uid's connections; null: none).
  // A message's fds are in this process from the moment recvmsg returns,
  // before any quota is checked, and the messages a batched socket hands
  // to JS wait for the turn's flush (FdBudget::HoldUnsettled): were every
  // readable connection of a uid read in one turn, each could bring a
  // message of up to kMaxFdsPerMessage fds past its limit, and were every
  // uid's read, each could bring one past the daemon's total (the budget's
  // parent). So while messages of the budget, or of its parent's, wait
  // unsettled, another is read only if the fds held, waiting for the
  // closer (the owner's here, everyone's at the top) and unsettled are
  // within each limit (FdBudget::MayRead): one message at most goes past a
  // uid's limit, and one past the total, in a turn, whatever the number of
  // connections and uids. The first message of a turn is always read:
  // a socket left readable is polled again on the next turn, after the
  // flush, never in a loop that finds nothing to do (holding a uid's
  // reading for longer is the daemon's to do: ServedConnection.holdReading).
  void SetReadBudget(std::shared_ptr<FdBudget> budget) { read_budget_ = std::move(budget); }
  const std::shared_ptr<FdBudget>& read_budget() const { return read_budget_; }
  // Hands fds[0..n) (a peer's, now this socket's to close) to the
  // background closer as one batch of this socket's owner, and returns its
  // ticket, which the socket remembers (BackgroundCloseTickets).
  uint64_t CloseInBackground(const int* fds, size_t n);
  // CloseInBackground of a frame channel's given fds, marked given to
  // `given_to` (FdCloseGivenInBackground): a number another fd of ours took
  // since, or none, is left alone.
  uint64_t CloseGivenInBackground(const int* fds, size_t n, uint64_t given_to);
  // CloseInBackground of fds a command holds as its client's
  // (FdCloseClientFdsInBackground): -EBADF and *refused the first one that
  // is one of fdbridge's own fds now, nothing handed over; else 0 and
  // *ticket the batch's (remembered as CloseInBackground's).
  int CloseClientFdsInBackground(const int* fds, size_t n, const std::optional<FdIdentity>* expected, const uint64_t* installs,
                                 uint64_t* ticket, int* refused);
  // The socket listens (the binding's Socket made with an accept
  // callback): Close() empties its backlog, not a receive queue. Set by the
  // binding when it makes the socket; Close() reads this flag, no syscall.
  void SetListening(bool on) { listening_ = on; }
  // Closes `fd`, a connection this listening socket accepted that nobody
  // takes: its queue may hold what its client sent before it was accepted
  // (ScmCloseConnection, as this socket's owner's). The tickets of its
  // background closes are this socket's (BackgroundCloseTickets).
  void CloseAccepted(int fd);
  // The tickets of this socket's background closes that are not done yet:
  // its truncated messages' fds, CloseInBackground's (a frame channel's
  // ledger swept).
  std::vector<uint64_t> BackgroundCloseTickets();

  // Every fd this socket receives is fdbridge's from the moment it arrives
  // (registered in the same step as the recvmsg: ScmRecv's `own`), as on a
  // socket that is itself registered as fdbridge's: for a protocol layer
  // that keeps what arrives for someone (the frame channel's ledger).
  void ReceiveOwnFds(bool on) { receive_own_ = on; }
  // Whether what this socket receives (or accepts) is registered as it arrives.
  bool receives_own() const { return own_socket() || receive_own_; }

  // Waiting on the calling thread, for a caller that cannot return to the
  // event loop (a synchronous request, FrameChannel::DupSync): this
  // socket's queued sends and receives run in poll(2) here, as the event
  // loop would run them, until the waiter is done, `deadline_ms` passes
  // (CLOCK_MONOTONIC, see MonotonicMs) or nothing more can arrive. Every
  // event meanwhile goes to the waiter first; what it does not take is
  // held, in arrival order, and handed to the filter and the delegate
  // once the wait is over, before WaitOnThread returns: the loop's
  // callbacks would have seen the same events in the same order, only
  // later. Neither the filter nor the delegate runs during the wait (no JS).
  //
  // On a socket that can receive no control data (SO_PASSRIGHTS off, no
  // SO_PASSCRED, SO_PASSPIDFD or SO_PASSSEC: a client's connection), the
  // wait is the receive itself, as in a blocking C client: one recvmsg that
  // sleeps until a message comes (SO_RCVTIMEO the time left), with no
  // control buffer, so that the kernel never installs an fd while the
  // registry lock is not held. For that the socket's file is made blocking
  // at its first wait and stays so: every other send and receive of the
  // socket's passes MSG_DONTWAIT (ScmSend's dont_wait, ScmRecv), and
  // poll/epoll do not care. A wait with sends queued (it needs POLLOUT
  // too) polls instead, and so does every wait on a worker thread, beside
  // the thread's wake-up (thread_wake.h), which its terminate() signals.
  class Waiter {
   public:
    virtual ~Waiter() = default;
    // A message: true takes it (fds[0..nfds) are the waiter's) and ends the
    // wait; reading stops after it (what came next is read by the loop).
    virtual bool TakeMessage(const char* data, size_t len, const int* fds, size_t nfds) = 0;
    // A queued send completed: true if it was the waiter's own (not handed on).
    virtual bool TakeSendComplete(uint32_t id, int err) = 0;
    // Whether the wait is over (a message taken, or the waiter's send failed).
    virtual bool done() const = 0;
  };
  // What WaitOnThread returns: 0 once the waiter is done; -ETIMEDOUT at the
  // deadline; -ENOTCONN when the socket is closed or not reading (nothing
  // can arrive); for a receive that ends the connection (held too), its
  // -errno, -EPROTO for a truncated message, or 1 for end of file; else
  // poll(2)'s -errno; kWaitWoken when the calling thread, a worker, was
  // woken (thread_wake.h: it is being terminated) with the waiter not done.
  static constexpr int kWaitEof = 1;
  static constexpr int kWaitWoken = 2;
  int WaitOnThread(Waiter* waiter, int64_t deadline_ms);
  static int64_t MonotonicMs();

  // Until the receive buffer is made, it can be given another size (a
  // socket that only drains what a refused peer sends needs a few bytes:
  // longer messages arrive truncated, their fds closed). False once made.
  bool SetReceiveBufferSize(size_t len);
  // The receive buffer, made now if it is not yet.
  char* ReceiveBuffer();

  int fd() const { return sock_.get(); }
  // Whether the socket's fd was closed behind our back (a socket of ours:
  // see Lost), looked at now, file included (a statx): for the rare paths
  // that ask (a call failed, the peer's process exited), not a round
  // trip's. Once closed, what Close found.
  bool CheckLost() { return closed_ ? lost_ : Lost(true); }
  int type() const { return type_; }
  bool closed() const { return closed_; }
  size_t queued_sends() const { return queue_.size(); }
  // The most receivers an unbound sender's queued datagrams wait for at once
  // (one connected socket each, see datagram_wait.cc): past it SendTo
  // refuses (kQueueFull).
  static constexpr size_t kMaxWaitingReceivers = 64;
  // What SendTo returns, nothing sent or queued, when that is why.
  static constexpr int kTooManyReceivers = 3;
  size_t waiting_receivers() const { return pins_.size(); }
  // sendmsg calls that found the socket, or a DGRAM receiver, full (EAGAIN):
  // a wait that sleeps adds one per wake-up, a wait that spins one per turn.
  uint64_t full_sends() const { return full_sends_; }
  // Messages that waited in the send queue and have since gone to the kernel
  // whole: it moves while the peer reads, whatever the queue's size does
  // meanwhile (new messages may fill it again to where it was).
  uint64_t sent_from_queue() const { return sent_from_queue_; }

 private:
  // A DGRAM socket of ours connected to one receiver (datagram_wait.cc): a
  // send through it reaches that receiver or fails (ECONNREFUSED once it is
  // gone), whatever socket binds its name since, and its POLLOUT follows
  // that receiver's queue. Freed by its poll's close (ClosePin).
  struct Pin {
    explicit Pin(UnixSocket* o) : owner(o) {}
    UnixSocket* owner;
    uv_poll_t poll;
    PolledNumber number{&poll, &UnixSocket::OnPinTaken, this};
    UniqueFd fd;  // empty once let go of (closed behind our back)
    struct sockaddr_un to;
    socklen_t to_len = 0;
    size_t queued = 0;  // queued datagrams that go through it
    bool polling = false;  // its poll started (left so between waits: a restart is an epoll_ctl)
    // For a path: the socket file the path named when it was connected (a
    // relative path, or one through a symlink, may name another since).
    bool by_file = false;
    dev_t file_dev = 0;
    ino_t file_ino = 0;
    bool gone = false;  // a send through it found the receiver gone: datagrams queued later get a pin of their own
  };

  struct QueuedSend {
    std::vector<char> data;
    size_t offset;
    UniqueFds fds;  // our own close-on-exec duplicates
    // Each copy's file as it was queued (FdFileIdentity) and its
    // registration, and the registry's take-overs then (FdTakeOvers): what
    // HeldCopies compares with before the copies go out or are closed.
    std::vector<FdIdentity> files;
    std::vector<uint64_t> registrations;
    uint64_t takeovers;
    uint32_t id;
    struct sockaddr_un to;  // the destination when to_len > 0 (SendTo)
    socklen_t to_len;
    Pin* pin = nullptr;  // sent through it, not by name (an unbound sender's)

    size_t charge;  // what it adds to queued_bytes_
  };

  class HeldEvents;  // socket_wait.cc: the delegate during WaitOnThread

  UnixSocket(int fd, int type, size_t max_fds, size_t recv_buffer_size, Delegate* delegate,
             char* external_buffer);
  ~UnixSocket();
  UnixSocket(const UnixSocket&) = delete;
  UnixSocket& operator=(const UnixSocket&) = delete;

  int Enqueue(const struct sockaddr_un* to, socklen_t to_len, const char* data, size_t len,
              size_t offset, const int* fds, size_t nfds, uint32_t id, Pin* pin = nullptr);
  // datagram_wait.cc: the pins and the waits on them.
  bool SendsUnbound();  // no address of its own (getsockname until it has one)
  int PinFor(const struct sockaddr_un& to, socklen_t to_len, Pin** out);
  int MakePin(Pin** out);  // not yet connected
  int ConnectPin(Pin* pin, const struct sockaddr_un& to, socklen_t to_len);
  bool PinHolds(Pin* pin);  // its number still holds its socket (let go of if not)
  void StopPinPoll(Pin* pin);
  void RetirePin(Pin* pin);  // its last datagram left: kept as the spare, or closed
  void ErasePin(Pin* pin);  // out of pins_
  void ClosePin(Pin* pin);
  void ClosePins();
  ssize_t SendThroughPin(QueuedSend* q);
  int WaitForReceiver(const struct sockaddr_un& to, socklen_t to_len);
  void WaitOn(Pin* pin);
  static void OnPinPoll(uv_poll_t* handle, int status, int events);
  static void OnPinTaken(void* owner, const FdIdentity& file, bool known);
  static void OnPinClosed(uv_handle_t* handle);
  static void OnPoll(uv_poll_t* handle, int status, int events);
  void SetRefed(bool on);  // Ref/Unref: the socket's poll and its pins'
  static void OnClosed(uv_handle_t* handle);
  void HandleClosed();  // one of its poll handles closed: freed after the last, once closed
  void UpdatePoll();
  void DoRead();
  // One receive's outcome to the filter and the delegate; false when
  // reading stops there (nothing more now, end of file, an error).
  bool Deliver(RecvResult* r);
  // Whether WaitOnThread may wait in a blocking recvmsg (socket_wait.cc),
  // with SO_RCVTIMEO set for `left_ms`.
  bool BlockingReceiveFor(int64_t left_ms);
  void DoAccept();
  void DoWrite();
  void FailQueue(int err);

  uv_poll_t poll_;
  // poll_'s hold of the number (polled_number.h): found by a new poll at
  // the number, and let go of there (LetGo).
  PolledNumber polled_{&poll_, &UnixSocket::OnNumberTaken, this};
  UniqueFd sock_;  // -1 once closed
  int type_;
  size_t max_fds_;
  Delegate* delegate_;
  bool reading_ = false;
  // The peer closed with our data unread (ECONNRESET) while messages it had
  // sent were still queued here: they are read first, the reset reported
  // at their end (see DoRead).
  bool reset_pending_ = false;
  bool end_read_turn_ = false;  // EndReadTurn
  bool accepting_ = false;
  bool closed_ = false;
  int poll_events_ = 0;
  std::deque<QueuedSend> queue_;
  size_t queued_bytes_ = 0;  // the queue's charge: data plus kQueuedSendOverhead per message
  size_t queue_limit_ = 32 * 1024 * 1024;  // socket.ts always sets its own (DEFAULT_SEND_QUEUE_LIMIT)
  size_t pause_reading_at_ = SIZE_MAX;
  bool ReadPaused() const { return queued_bytes_ > pause_reading_at_; }
  void PopQueued();
  // Lets go of the copies of `q` that no longer hold the file they were
  // queued with, unclosed, and returns how many there were. A copy's
  // number can be closed behind fdbridge's back (a program's
  // fs.closeSync of a number it does not own) and another file opened
  // there: that file is the program's, never sent and never closed here.
  // One statx(2) per copy (AT_STATX_DONT_SYNC: no filesystem asked), plus
  // the registry's lock per copy when a new fd of ours has taken over some
  // number since the copies were made (FdTakeOvers: a copy of the same
  // file at the number, of another owner's). The ones let go of end their
  // registration as closed by someone else (FdClosedByOther), which a
  // watching leak check blames on the code under test.
  size_t DropSwappedCopies(QueuedSend* q);
  std::vector<char> own_buf_;  // empty when an external buffer is used, or none is made yet
  char* recv_buf_;  // nullptr until made (ReceiveBuffer)
  size_t recv_len_;
  std::unique_ptr<char[]> control_;  // aligned for cmsghdr by operator new
  size_t control_len_;
  std::vector<int> recv_fds_;
  // sock_ is registered as fdbridge's (its registration when it was made,
  // polled_'s): what it receives is too.
  bool own_socket() const { return polled_.registration() != 0; }
  // Of such a socket: the registry's count of take-overs at the last look
  // (FdTakeOvers).
  uint64_t takeovers_seen_ = 0;
  // Closed behind our back (Lost): never polled, used or closed again.
  bool lost_ = false;
  // Whether this socket (one of ours) was closed behind our back: its number
  // taken by a new fd of ours (in memory: a lock only once some registration
  // has been taken over since the last look), or with `check_file`, holding
  // another file or none (a statx(2), no lock while the file is the same:
  // where a call on the number failed, at Close, when a poll is made at the
  // number and when the poll starts from stopped; never on a send, a
  // receive, or a change of a started poll). Lets go of the number once it
  // is (LetGo).
  bool Lost(bool check_file);
  // Marks the socket lost and lets go of the number (PolledNumber::LetGo):
  // a poll still started is stopped now, and no later stop or uv_close of
  // it reaches epoll, where the number's entry can by then be another
  // handle's (a new socket's at that number).
  void LetGo();
  // PolledNumber's on_taken: a poll is about to be made at this socket's
  // number on its loop (Create: a socket, a watch or a pump's fd made for
  // the file now there, `file`). While this one's poll holds the number in
  // libuv (loop->watchers), uv_poll_init of any other handle there fails
  // with EEXIST, and the number's events would come to this socket, which
  // would read and write the new file: it lets go of the number first,
  // unless it still holds the same file (a second socket on it: left to
  // libuv).
  static void OnNumberTaken(void* owner, const FdIdentity& file, bool known);
  bool receive_own_ = false;  // ReceiveOwnFds
  Filter* filter_ = nullptr;
  // Set during WaitOnThread: the waiter took its message, reading stops.
  const Waiter* waiter_ = nullptr;
  // WaitOnThread's blocking receive: -1 not yet looked at, 0 not possible
  // (the socket can receive control data), 1 set up (the file is blocking).
  int blocking_receive_ = -1;
  int64_t receive_timeout_ms_ = 0;  // SO_RCVTIMEO as last set (0: never)
  bool close_in_background_ = false;
  bool listening_ = false;  // SetListening
  bool oob_inline_ = false;  // SO_OOBINLINE set by Create (STREAM)
  uint64_t close_owner_ = 0;
  // Close's work on the socket's fd (taken from sock_): shut down and
  // emptied, then closed (see Close).
  void CloseEmptied(int fd);
  std::shared_ptr<FdBudget> read_budget_;  // SetReadBudget
  // Whether another message may be read now (see SetReadBudget).
  bool MayReadMore() const;
  // Tickets of background closes made for this socket, done ones dropped
  // now and then (DropDoneTickets).
  std::vector<uint64_t> close_tickets_;
  size_t tickets_kept_ = 0;  // close_tickets_.size() after the last drop
  void RememberTicket(uint64_t ticket);
  uint32_t next_send_id_ = 1;
  void CompleteSend(uint32_t id, int err);
  // An unbound sender's pins, one per receiver its queued datagrams go to.
  std::vector<Pin*> pins_;
  // A bound sender's datagrams carry its address and go by name: its head
  // datagram waits for a full receiver on the waker, connected to the one
  // the name has at each wait.
  Pin* waker_ = nullptr;
  Pin* spare_ = nullptr;  // the last pin retired, not polled, made use of again by MakePin
  Pin* waiting_on_ = nullptr;  // the pin (or waker) the head datagram waits on
  bool bound_ = false;  // SendsUnbound saw an address (a socket keeps it)
  bool refed_ = true;  // Ref()/Unref(), applied to each pin when it is made
  bool receive_from_ = false;
  uint64_t receipt_tag_ = 0;  // RecordReceiptsFor
  bool watch_hangup_ = false;
  bool ReadingNow() const { return (reading_ && !ReadPaused()) || accepting_; }
  ScmSender sender_;
  int pending_closes_ = 0;  // poll handles still closing (freed at 0, once closed)
  uint64_t full_sends_ = 0;
  uint64_t sent_from_queue_ = 0;
  void (*on_freed_)(void*) = nullptr;
  void* on_freed_arg_ = nullptr;
};

}  // namespace fdbridge

#endif  // FDBRIDGE_UNIX_SOCKET_H_
