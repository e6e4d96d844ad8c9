// The remote transport's channel, moved out of JavaScript: frames over one
// byte stream (the via process's stdin and stdout, src/transports/remote-channel.ts
// describes the format), and the relayed streams whose local end is a pipe
// or a stream socket, pumped here on the event loop with uv_poll.
//
// A relayed byte crosses each side in one read and one write of up to
// kReadBytes, with no JavaScript, no allocation and no callback per chunk:
// a pipe's bytes go out as DATA frames behind their headers in one writev,
// and DATA frames read from the channel are written to their fd straight
// from the read buffer. What JavaScript still sees: every frame that is not
// a pumped stream's (calls, replies, OPEN, the streams of regular files,
// which are read and written on the thread pool), each stream half's end,
// the channel's end, and the output backlog draining.
//
// Flow control is the channel's, per stream and direction: a source reads
// only while the peer's credit allows and the output's backlog is at most
// kCongestedBytes; a sink holds what its fd does not take at once (never
// more than the window it granted) and gives credit back as its writes
// complete. A consumer that reads slowly holds back its own stream only.
//
// Uses libuv but no Node-API: events go to a Delegate (the binding layer).
#ifndef FDBRIDGE_RELAY_PUMP_H_
#define FDBRIDGE_RELAY_PUMP_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <uv.h>

#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "polled_number.h"
#include "unique_fd.h"

namespace fdbridge {

// Bytes waiting to be written, in order, copied into blocks that are used
// again (a sink's backlog and the channel's output churn through megabytes
// a second: fresh allocations of that size are page faults and zeroing).
class ByteQueue {
 public:
  static constexpr size_t kBlockBytes = 256 * 1024;
  // Blocks kept for reuse, shared by the queues of one pump.
  class Pool {
   public:
    std::unique_ptr<char[]> Take();
    void Give(std::unique_ptr<char[]> block);

   private:
    static constexpr size_t kKeep = 16;
    std::vector<std::unique_ptr<char[]>> free_;
  };

  explicit ByteQueue(Pool* pool) : pool_(pool) {}
  ~ByteQueue() { Clear(); }
  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;

  void Append(const char* data, size_t len);
  // The first bytes as at most `max` iovecs; returns their count, *total their bytes.
  int Peek(struct iovec* iov, int max, size_t* total) const;
  void Consume(size_t n);
  void Clear();
  size_t size() const { return bytes_; }
  bool empty() const { return bytes_ == 0; }

 private:
  struct Block {
    std::unique_ptr<char[]> data;
    size_t begin = 0;
    size_t end = 0;
  };
  Pool* pool_;
  std::deque<Block> blocks_;
  size_t bytes_ = 0;
};

class RelayPump {
 public:
  // The wire format (remote-channel.ts holds the same numbers).
  static constexpr size_t kHeaderBytes = 9;
  static constexpr uint8_t kData = 8;
  static constexpr uint8_t kCredit = 9;
  static constexpr uint8_t kEof = 10;
  static constexpr uint8_t kStop = 11;
  static constexpr size_t kMaxDataBytes = 256 * 1024;
  static constexpr size_t kMaxFrameBytes = 64 * 1024 * 1024;
  static constexpr int64_t kStreamWindow = 4 * 1024 * 1024;
  static constexpr size_t kCongestedBytes = 256 * 1024;
  // One read of the channel or of a source: what the kernel holds is taken
  // in one call (a unix socket's or a pipe's whole buffer).
  static constexpr size_t kReadBytes = 1024 * 1024;

  // A stream's halves, in OnStreamDone.
  static constexpr int kOut = 1;  // this side's fd -> the peer
  static constexpr int kIn = 2;   // the peer -> this side's fd

  // OnEnd's err besides 0 (end of file) and -errno.
  static constexpr int kProtocolError = 1;
  // OnEnd's message with an -errno of the output's (a write), not the input's.
  static constexpr const char* kOutputFailed = "write";

  class Delegate {
   public:
    virtual ~Delegate() = default;
    // A frame that is not a pumped stream's. DATA comes piece by piece, as
    // it is read (its frame boundaries carry nothing); any other frame's
    // payload whole. `data` is valid during the call only.
    virtual void OnFrame(uint8_t type, uint32_t id, const char* data, size_t len) = 0;
    // A pumped stream's half ended: kOut once its end of file went out
    // (the fd reached it, or failed) or the peer sent STOP; kIn once the
    // peer's end of file was written through (a pipe's fd is closed then,
    // a socket's shut down for writing), or a write failed (STOP sent).
    // Its fd is closed once no half is left.
    virtual void OnStreamDone(uint32_t stream, int half) = 0;
    // The output's backlog fell back to kCongestedBytes or less.
    virtual void OnDrained() = 0;
    // Once: the input ended (0), failed (-errno) or broke the protocol
    // (kProtocolError, `message` says how), or the output failed (-errno,
    // `message` kOutputFailed: the peer takes nothing more, so nothing sent
    // from now on is answered). Nothing more is read.
    virtual void OnEnd(int err, const std::string& message) = 0;
  };

  // Takes in_fd and out_fd (both closed by Close) and starts reading.
  // Returns nullptr and sets *err when the poll handles cannot be set up;
  // the fds then still belong to the caller.
  static RelayPump* Create(uv_loop_t* loop, int in_fd, int out_fd, Delegate* delegate, int* err);

  // Queues one frame; frames leave in the order they were sent. Dropped
  // once the output failed or ended.
  void Send(uint8_t type, uint32_t id, const char* data, size_t len);

  // Pumps stream `id` through `fd` from now on: `read` its bytes out as
  // DATA (a source, with the full window of credit), `write` DATA into it
  // (a sink). `socket`: a sink's end of file is shutdown(SHUT_WR) rather
  // than a close. Takes `fd` on success; returns -errno (the fd still the
  // caller's) or -EEXIST for an id already pumped.
  int AddStream(uint32_t id, int fd, bool read, bool write, bool socket);

  // Sends what the source holds right now (non-blocking reads, as far as
  // the credit allows, whatever the backlog) and its end of file if it has
  // come. Returns true when it has (its kOut half is then done, without an
  // OnStreamDone: the caller knows).
  bool Flush(uint32_t id);

  // Stops pumping `id` and closes its fd at once, telling nobody.
  void RemoveStream(uint32_t id);

  // Bytes pumped so far: out (sent as DATA) and in (received as DATA).
  bool StreamBytes(uint32_t id, uint64_t* in, uint64_t* out) const;

  // Reads no more (OnEnd is not called).
  void StopInput();
  // The peer sees end of file once the queued frames are out.
  void EndOutput();
  // Drops the queued frames and closes the output now.
  void CloseOutput();

  // Closes every stream's fd and both channel fds; the object deletes
  // itself once libuv has closed its handles, then `on_freed(arg)` runs.
  // Idempotent.
  void Close(void (*on_freed)(void*) = nullptr, void* arg = nullptr);

  // A stream socket's fd is closed on the background closer, as `owner`'s
  // (FdCloseInBackground): it is a copy of a caller's socket, possibly its
  // last reference once the caller closed its own, and the last close of a
  // TCP socket with SO_LINGER and unsent data waits out the linger time.
  // A pipe's closes here (its reader's end of file is due at once).
  void SetCloseOwner(uint64_t owner) { close_owner_ = owner; }
  // The tickets of those closes not done yet (the object's close too: call
  // it right after Close, before the loop turns).
  std::vector<uint64_t> CloseTickets();

  size_t queued_bytes() const { return out_queue_.size(); }
  bool congested() const { return out_queue_.size() > kCongestedBytes; }
  bool output_open() const { return !output_failed_ && !output_ended_ && !out_closed_; }

 private:
  enum class Read { kMore, kEmpty, kEnded };

  struct Stream {
    RelayPump* pump = nullptr;
    uint32_t id = 0;
    UniqueFd fd;
    uv_poll_t poll;
    int events = 0;
    // RemoveStream ran: the record lives on until libuv has closed its
    // poll handle, so that code still holding it (a delegate call made from
    // inside this stream's own event) finds it marked instead of freed.
    bool removed = false;
    // The fd is closed and uv_close was called on `poll`; its callback has run.
    bool handle_closing = false;
    bool handle_closed = false;
    bool socket = false;
    // kOut: the source.
    bool out_active = false;
    int64_t credit = kStreamWindow;
    // kIn: the sink.
    bool in_active = false;
    bool eof_received = false;
    explicit Stream(ByteQueue::Pool* pool) : pending(pool) {}
    ByteQueue pending;
    uint64_t owed = 0;  // written, credit not yet given back
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
    // poll's hold of the number (PolledNumber): let go of, with `fd`
    // released unclosed, once its fd was closed behind our back.
    PolledNumber number{&poll, &RelayPump::OnStreamTaken, this};
    // The registry's count of take-overs at the last look (FdTakeOvers, StillHeld).
    uint64_t takeovers_seen = 0;
  };

  RelayPump() = default;
  ~RelayPump() = default;
  RelayPump(const RelayPump&) = delete;
  RelayPump& operator=(const RelayPump&) = delete;

  static void OnInput(uv_poll_t* handle, int status, int events);
  static void OnOutput(uv_poll_t* handle, int status, int events);
  static void OnStream(uv_poll_t* handle, int status, int events);
  static void OnHandleClosed(uv_handle_t* handle);
  static void OnStreamClosed(uv_handle_t* handle);
  // PolledNumber's on_taken, for the input, the output and a stream: a poll
  // is about to be made at its number, which holds `file` now. Unless it is
  // still our fd's file, the poll lets go of the number and the fd is
  // released unclosed (PolledNumber::YieldTo): nothing is read from or
  // written to that number again. The input or the output let go of ends
  // the channel at once, whatever is queued: OnEnd (-EBADF; for the output,
  // message kOutputFailed, its queued frames dropped) on the loop's next
  // turn (EndLater), not from inside the poll being made for someone else.
  // A stream let go of ends both its halves on the loop's next turn
  // (EndTakenLater): its sink stops (STOP sent, the bytes it had not
  // written dropped), its source ends (EOF sent), so that the peer's end
  // of it fails its writes (EPIPE) and sees end of file instead of waiting
  // until the channel is closed.
  static void OnInputTaken(void* owner, const FdIdentity& file, bool known);
  static void OnOutputTaken(void* owner, const FdIdentity& file, bool known);
  static void OnStreamTaken(void* owner, const FdIdentity& file, bool known);
  // Ends the halves still active of stream `id` on the loop's next turn (OnTakenLater).
  void EndTakenLater(uint32_t id);
  // Before each read or write of s's fd, and after each take-over
  // (OnTakeOverWake): whether it is still the fd the
  // stream was given. An fd of ours closed behind our back whose number a
  // new fd of ours took (a registration there other than the one its poll
  // read) is let go of as OnStreamTaken does (YieldStream), also when that
  // new fd is polled on no loop of ours. One relaxed load while no
  // registration has been taken over since the last look, a registry read
  // else. A file the program itself opened at the number is not seen.
  bool StillHeld(Stream* s);
  // A stream's let-go, for OnStreamTaken and StillHeld: unless s's fd is
  // still at its number (PolledNumber::YieldTo with the file there now,
  // `known` false when unread), its poll lets go of the number, `fd` is
  // released unclosed, and both halves end on the loop's next turn
  // (EndTakenLater).
  void YieldStream(Stream* s, const FdIdentity& file, bool known);
  static void OnTakenLater(uv_timer_t* handle);
  // A registration was taken over (FdWakeOnTakeOvers, on whichever thread
  // took it): wakes the pump's loop.
  static void WakeForTakeOver(void* arg);
  // On the loop, after such a wake: every stream looks (StillHeld), so that
  // one whose fd was closed behind our back and whose number a new fd of
  // ours took ends (EndTakenLater) though its number gets no more poll
  // events and the stream reads and writes nothing more.
  static void OnTakeOverWake(uv_async_t* handle);
  // Ends the input with OnEnd(err, message) on the loop's next turn, for a
  // reason found where the delegate may not be called: inside a poll being
  // made for someone else (the input let go of), or inside a Send the
  // delegate's own code made (the output failed). The first reason is told.
  void EndLater(int err, const char* message);
  static void OnEndLater(uv_timer_t* handle);
  // Closes end_later_ if it was made and is not closing yet.
  void CloseEndLater();
  // One of our handles is closed: the last, once Close ran, frees the object.
  void HandleGone();

  Stream* Find(uint32_t id) const;
  void ReadInput();
  void Parse(const char* data, size_t len);
  // False when parsing must stop (the input ended or was stopped, or the pump closed).
  bool Deliver(uint8_t type, uint32_t id, const char* data, size_t len);
  bool HandleStreamFrame(Stream* s, uint8_t type, const char* data, size_t len);
  void End(int err, const std::string& message);

  // Output: writes iov[0..n) after what is queued, queuing what the kernel does not take.
  void Output(const struct iovec* iov, int n);
  void WriteQueued();
  // A write of the output failed (-errno): nothing queued or sent from now
  // on reaches the peer, so the channel ends (EndLater, kOutputFailed).
  void OutputFailed(int err);
  void UpdateOutputPoll();
  void SendCredit(uint32_t id, uint64_t bytes);
  // One read of s's fd (at most its credit) sent as DATA. `flush`: whatever
  // the output's backlog.
  Read ReadSource(Stream* s, bool flush);
  void SourceEnded(Stream* s, bool notify);
  void SinkData(Stream* s, const char* data, size_t len);
  void WritePending(Stream* s);
  void SinkWritten(Stream* s, size_t n);
  void EndSink(Stream* s);
  void StopSink(Stream* s);
  void HalfDone(Stream* s, int half, bool notify);
  void UpdateStreamPoll(Stream* s);
  void ResumeSources();
  void CloseStreamFd(Stream* s);
  void ShutdownOutput();

  uv_loop_t* loop_ = nullptr;
  Delegate* delegate_ = nullptr;
  UniqueFd in_fd_;
  UniqueFd out_fd_;
  uv_poll_t in_poll_;
  uv_poll_t out_poll_;
  PolledNumber in_number_{&in_poll_, &RelayPump::OnInputTaken, this};
  PolledNumber out_number_{&out_poll_, &RelayPump::OnOutputTaken, this};
  bool out_polling_ = false;
  // An end told on the loop's next turn (EndLater): from this timer's
  // callback. Made then only, one of open_handles_ from then on.
  uv_timer_t end_later_;
  bool end_later_made_ = false;
  bool end_later_closing_ = false;
  int end_later_err_ = 0;
  const char* end_later_message_ = "";
  // Streams let go of (OnStreamTaken) whose halves end on the loop's next
  // turn: from this timer's callback. Made on the first, one of
  // open_handles_ from then on, closed by Close.
  uv_timer_t taken_later_;
  bool taken_later_made_ = false;
  std::vector<uint32_t> taken_;
  // Woken at each take-over (WakeForTakeOver): made with the first stream,
  // unreferenced (it keeps no loop alive), one of open_handles_ from then
  // on, closed by Close.
  uv_async_t takeover_wake_;
  bool takeover_wake_made_ = false;
  int open_handles_ = 0;
  bool closed_ = false;
  bool input_done_ = false;
  bool output_failed_ = false;
  bool output_ended_ = false;  // shutdown(SHUT_WR) done
  bool end_output_ = false;    // wanted once the queue is out
  bool out_closed_ = false;
  bool was_congested_ = false;
  void (*on_freed_)(void*) = nullptr;
  void* freed_arg_ = nullptr;

  std::unordered_map<uint32_t, Stream*> streams_;
  uint64_t close_owner_ = 0;
  std::vector<uint64_t> close_tickets_;

  // Output queue: what the kernel did not take yet, in order.
  ByteQueue::Pool pool_;
  ByteQueue out_queue_{&pool_};

  // Input: the read buffer and the frame being parsed.
  std::unique_ptr<char[]> in_buf_;
  char head_[kHeaderBytes];
  size_t head_bytes_ = 0;
  uint8_t type_ = 0;
  uint32_t id_ = 0;
  int64_t left_ = -1;  // payload bytes still to come; -1: a header is next
  std::string parts_;  // a non-DATA frame's payload so far

  // A source's read buffer.
  std::unique_ptr<char[]> src_buf_;
};

}  // namespace fdbridge

#endif  // FDBRIDGE_RELAY_PUMP_H_
