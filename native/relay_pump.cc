#include "relay_pump.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "fd_ops.h"

namespace fdbridge {

namespace {

constexpr int kMaxIov = 64;

uint32_t ReadLe32(const char* p) {
  const unsigned char* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | static_cast<uint32_t>(u[1]) << 8 | static_cast<uint32_t>(u[2]) << 16 |
         static_cast<uint32_t>(u[3]) << 24;
}

void WriteLe32(char* p, uint32_t v) {
  p[0] = static_cast<char>(v & 0xff);
  p[1] = static_cast<char>((v >> 8) & 0xff);
  p[2] = static_cast<char>((v >> 16) & 0xff);
  p[3] = static_cast<char>((v >> 24) & 0xff);
}

void Header(char* h, uint8_t type, uint32_t id, uint32_t length) {
  WriteLe32(h, length);
  h[4] = static_cast<char>(type);
  WriteLe32(h + 5, id);
}

ssize_t ReadRetry(int fd, char* buf, size_t len) {
  ssize_t r;
  do r = read(fd, buf, len);
  while (r < 0 && errno == EINTR);
  return r;
}

ssize_t WritevRetry(int fd, const struct iovec* iov, int n) {
  ssize_t r;
  do r = writev(fd, iov, n);
  while (r < 0 && errno == EINTR);
  return r;
}

}  // namespace

std::unique_ptr<char[]> ByteQueue::Pool::Take() {
  if (free_.empty()) return std::unique_ptr<char[]>(new char[kBlockBytes]);
  std::unique_ptr<char[]> b = std::move(free_.back());
  free_.pop_back();
  return b;
}

void ByteQueue::Pool::Give(std::unique_ptr<char[]> block) {
  if (free_.size() < kKeep) free_.push_back(std::move(block));
}

void ByteQueue::Append(const char* data, size_t len) {
  bytes_ += len;
  while (len > 0) {
    if (blocks_.empty() || blocks_.back().end == kBlockBytes) {
      blocks_.emplace_back();
      blocks_.back().data = pool_->Take();
    }
    Block& b = blocks_.back();
    size_t n = std::min(len, kBlockBytes - b.end);
    memcpy(b.data.get() + b.end, data, n);
    b.end += n;
    data += n;
    len -= n;
  }
}

int ByteQueue::Peek(struct iovec* iov, int max, size_t* total) const {
  int n = 0;
  *total = 0;
  for (const Block& b : blocks_) {
    if (n == max) break;
    iov[n].iov_base = b.data.get() + b.begin;
    iov[n].iov_len = b.end - b.begin;
    *total += iov[n].iov_len;
    n++;
  }
  return n;
}

void ByteQueue::Consume(size_t n) {
  bytes_ -= std::min(n, bytes_);
  while (n > 0 && !blocks_.empty()) {
    Block& b = blocks_.front();
    size_t here = b.end - b.begin;
    if (n < here) {
      b.begin += n;
      return;
    }
    n -= here;
    pool_->Give(std::move(b.data));
    blocks_.pop_front();
  }
}

void ByteQueue::Clear() {
  for (Block& b : blocks_) pool_->Give(std::move(b.data));
  blocks_.clear();
  bytes_ = 0;
}

RelayPump* RelayPump::Create(uv_loop_t* loop, int in_fd, int out_fd, Delegate* delegate, int* err) {
  RelayPump* p = new RelayPump();
  p->loop_ = loop;
  p->delegate_ = delegate;
  // A poll of this thread's at either number whose fd was closed behind its
  // back lets go of it first (PolledNumber).
  int r = p->in_number_.Init(loop, in_fd);
  if (r != 0) {
    delete p;  // not initialized: nothing for libuv to close
    *err = r;
    return nullptr;
  }
  p->in_poll_.data = p;
  p->open_handles_ = 1;
  r = p->out_number_.Init(loop, out_fd);
  if (r != 0) {
    // The input's handle exists: the object goes once libuv has closed it.
    p->closed_ = true;
    p->in_number_.Forget();
    uv_close(reinterpret_cast<uv_handle_t*>(&p->in_poll_), OnHandleClosed);
    *err = r;
    return nullptr;
  }
  p->out_poll_.data = p;
  p->open_handles_ = 2;
  p->in_fd_ = UniqueFd(in_fd);
  p->out_fd_ = UniqueFd(out_fd);
  r = uv_poll_start(&p->in_poll_, UV_READABLE, OnInput);
  if (r != 0) {
    p->in_fd_.release();
    p->out_fd_.release();
    p->Close();
    *err = r;
    return nullptr;
  }
  *err = 0;
  return p;
}

void RelayPump::OnInputTaken(void* owner, const FdIdentity& file, bool known) {
  RelayPump* self = static_cast<RelayPump*>(owner);
  if (self->closed_ || !self->in_number_.YieldTo(file, known, &self->in_fd_) || self->input_done_) return;
  // Nothing more is read: the input's end is told on the loop's next turn,
  // not from inside the poll being made for someone else.
  self->EndLater(-EBADF, "");
}

void RelayPump::EndLater(int err, const char* message) {
  if (closed_ || input_done_ || end_later_made_) return;
  end_later_err_ = err;
  end_later_message_ = message;
  uv_timer_init(loop_, &end_later_);  // cannot fail
  end_later_.data = this;
  open_handles_++;
  end_later_made_ = true;
  uv_timer_start(&end_later_, OnEndLater, 0, 0);
}

void RelayPump::OnEndLater(uv_timer_t* handle) {
  RelayPump* self = static_cast<RelayPump*>(handle->data);
  self->CloseEndLater();
  if (!self->closed_) self->End(self->end_later_err_, self->end_later_message_);
}

void RelayPump::CloseEndLater() {
  if (!end_later_made_ || end_later_closing_) return;
  end_later_closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&end_later_), OnHandleClosed);
}

void RelayPump::OnOutputTaken(void* owner, const FdIdentity& file, bool known) {
  RelayPump* self = static_cast<RelayPump*>(owner);
  if (self->closed_ || self->out_closed_ || !self->out_number_.YieldTo(file, known, &self->out_fd_)) return;
  // LetGo stopped the poll, and it is never started or stopped again
  // (UpdateOutputPoll wants out_fd_, empty from here on).
  self->out_polling_ = false;
  // Nothing sent reaches the peer from now on, and no write would fail to
  // say so while frames are queued (none is tried): the channel ends, on
  // the loop's next turn (OutputFailed's EndLater), not from inside the
  // poll being made for someone else. An output already shut down (its end
  // of file sent) has nothing more to send: nothing is lost.
  if (self->output_open()) self->OutputFailed(-EBADF);
}

void RelayPump::OnStreamTaken(void* owner, const FdIdentity& file, bool known) {
  Stream* s = static_cast<Stream*>(owner);
  RelayPump* self = s->pump;
  if (self->closed_ || s->removed || s->handle_closing) return;
  self->YieldStream(s, file, known);
}

bool RelayPump::StillHeld(Stream* s) {
  if (!s->fd) return false;
  uint64_t takeovers = FdTakeOvers();
  if (takeovers == s->takeovers_seen) return true;
  s->takeovers_seen = takeovers;
  if (s->number.StillRegistered()) return true;
  // A new fd of ours at the number, whatever its file: an unread file
  // (known false) is never the one Init read, so YieldTo lets go, with no
  // second registry read.
  YieldStream(s, FdIdentity{}, false);
  return false;
}

void RelayPump::YieldStream(Stream* s, const FdIdentity& file, bool known) {
  if (!s->number.YieldTo(file, known, &s->fd)) return;
  s->events = 0;
  // Its halves end on the loop's next turn (EndTakenLater), not from inside
  // the poll being made for someone else or the read, write or shutdown
  // being tried: nothing more can be read from or written to its fd, and
  // the peer must not wait for either.
  EndTakenLater(s->id);
}

void RelayPump::EndTakenLater(uint32_t id) {
  if (!taken_later_made_) {
    uv_timer_init(loop_, &taken_later_);  // cannot fail
    taken_later_.data = this;
    open_handles_++;
    taken_later_made_ = true;
  }
  taken_.push_back(id);
  uv_timer_start(&taken_later_, OnTakenLater, 0, 0);
}

void RelayPump::OnTakenLater(uv_timer_t* handle) {
  RelayPump* self = static_cast<RelayPump*>(handle->data);
  std::vector<uint32_t> ids;
  ids.swap(self->taken_);
  for (uint32_t id : ids) {
    Stream* s = self->Find(id);
    if (self->closed_ || s == nullptr) continue;
    // The sink's bytes not yet written (s->pending) cannot be any more: the
    // peer stops sending (STOP), as after a write that fails.
    if (s->in_active) self->StopSink(s);
    // The delegate told of the sink's end may have removed the stream or closed the pump.
    if (self->closed_ || s->removed) continue;
    // The source is read no more: the peer sees end of file, as after a read that fails.
    if (s->out_active) self->SourceEnded(s, true);
  }
}

void RelayPump::WakeForTakeOver(void* arg) { uv_async_send(static_cast<uv_async_t*>(arg)); }

void RelayPump::OnTakeOverWake(uv_async_t* handle) {
  RelayPump* self = static_cast<RelayPump*>(handle->data);
  if (self->closed_) return;
  // StillHeld lets go of a stream and ends it on the loop's next turn
  // (EndTakenLater): streams_ does not change while it runs.
  for (auto& entry : self->streams_) {
    Stream* s = entry.second;
    if (!s->removed && !s->handle_closing) self->StillHeld(s);
  }
}

RelayPump::Stream* RelayPump::Find(uint32_t id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second;
}

// ---------------------------------------------------------------------------
// input

void RelayPump::OnInput(uv_poll_t* handle, int status, int events) {
  RelayPump* self = static_cast<RelayPump*>(handle->data);
  if (self->closed_ || self->input_done_ || !self->in_fd_) return;
  self->ReadInput();
}

void RelayPump::ReadInput() {
  if (!in_buf_) in_buf_.reset(new char[kReadBytes]);
  ssize_t r = ReadRetry(in_fd_.get(), in_buf_.get(), kReadBytes);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    End(-errno, "");
    return;
  }
  if (r == 0) {
    End(0, "");
    return;
  }
  Parse(in_buf_.get(), static_cast<size_t>(r));
}

void RelayPump::Parse(const char* data, size_t len) {
  size_t off = 0;
  while (off < len && !input_done_ && !closed_) {
    if (left_ < 0) {
      // A header: read in place when this read holds all of it.
      const char* head;
      if (head_bytes_ == 0 && len - off >= kHeaderBytes) {
        head = data + off;
        off += kHeaderBytes;
      } else {
        size_t n = std::min(kHeaderBytes - head_bytes_, len - off);
        memcpy(head_ + head_bytes_, data + off, n);
        head_bytes_ += n;
        off += n;
        if (head_bytes_ < kHeaderBytes) return;
        head = head_;
      }
      head_bytes_ = 0;
      uint32_t length = ReadLe32(head);
      if (length > kMaxFrameBytes) {
        End(kProtocolError, "a frame announces " + std::to_string(length) + " payload bytes, more than " +
                                std::to_string(kMaxFrameBytes) + ": not an fdbridge channel, or a corrupt one");
        return;
      }
      type_ = static_cast<uint8_t>(head[4]);
      id_ = ReadLe32(head + 5);
      left_ = length;
      if (length == 0) {
        left_ = -1;
        if (!Deliver(type_, id_, nullptr, 0)) return;
      }
      continue;
    }
    size_t n = std::min(static_cast<size_t>(left_), len - off);
    const char* piece = data + off;
    off += n;
    left_ -= static_cast<int64_t>(n);
    if (type_ == kData) {
      // DATA is a byte stream: each piece goes on as it came, never joined.
      if (left_ == 0) left_ = -1;
      if (!Deliver(kData, id_, piece, n)) return;
      continue;
    }
    parts_.append(piece, n);
    if (left_ > 0) continue;
    left_ = -1;
    std::string payload;
    payload.swap(parts_);
    if (!Deliver(type_, id_, payload.data(), payload.size())) return;
  }
}

bool RelayPump::Deliver(uint8_t type, uint32_t id, const char* data, size_t len) {
  bool stream_frame = type == kData || type == kCredit || type == kEof || type == kStop;
  Stream* s = stream_frame ? Find(id) : nullptr;
  if (s != nullptr) {
    HandleStreamFrame(s, type, data, len);
  } else {
    delegate_->OnFrame(type, id, data, len);
  }
  return !input_done_ && !closed_;
}

// May end the stream's halves and tell the delegate: `s` is not used after.
bool RelayPump::HandleStreamFrame(Stream* s, uint8_t type, const char* data, size_t len) {
  switch (type) {
    case kData:
      // After a STOP (or an end of file) what was in flight is dropped.
      if (s->in_active && !s->eof_received) SinkData(s, data, len);
      return true;
    case kCredit:
      if (len != 4) {
        End(kProtocolError, "a CREDIT frame of " + std::to_string(len) + " bytes (4 expected)");
        return false;
      }
      if (s->out_active) {
        // Credit gives back bytes written, never more than were sent: the
        // credit a sender holds never passes its window.
        s->credit += ReadLe32(data);
        if (s->credit > kStreamWindow) {
          End(kProtocolError, "stream " + std::to_string(s->id) + ": the peer gave back more credit than it was sent");
          return false;
        }
        UpdateStreamPoll(s);
      }
      return true;
    case kEof:
      if (!s->in_active || s->eof_received) return true;
      s->eof_received = true;
      if (s->pending.empty()) EndSink(s);
      return true;
    case kStop:
      if (!s->out_active) return true;
      // Nobody reads what comes in here any more. A pipe's fd closes with
      // this half (its writer gets EPIPE); a socket's stays open for the
      // other half, so its reading side is shut: an AF_UNIX writer then gets
      // EPIPE too, even one already blocked on a full buffer, instead of
      // waiting for reads that never come (a TCP peer is not told).
      if (s->socket && s->in_active && StillHeld(s)) shutdown(s->fd.get(), SHUT_RD);
      HalfDone(s, kOut, true);
      return true;
  }
  return true;
}

void RelayPump::End(int err, const std::string& message) {
  if (input_done_) return;
  input_done_ = true;
  parts_.clear();
  parts_.shrink_to_fit();
  if (!closed_) uv_poll_stop(&in_poll_);
  delegate_->OnEnd(err, message);
}

void RelayPump::StopInput() {
  if (input_done_) return;
  input_done_ = true;
  parts_.clear();
  if (!closed_) uv_poll_stop(&in_poll_);
}

// ---------------------------------------------------------------------------
// output

void RelayPump::Send(uint8_t type, uint32_t id, const char* data, size_t len) {
  char h[kHeaderBytes];
  Header(h, type, id, static_cast<uint32_t>(len));
  struct iovec iov[2] = {{h, kHeaderBytes}, {const_cast<char*>(data), len}};
  Output(iov, len > 0 ? 2 : 1);
}

void RelayPump::SendCredit(uint32_t id, uint64_t bytes) {
  char b[4];
  WriteLe32(b, static_cast<uint32_t>(bytes));
  Send(kCredit, id, b, 4);
}

void RelayPump::Output(const struct iovec* iov, int n) {
  if (!output_open() || closed_) return;
  size_t total = 0;
  for (int i = 0; i < n; i++) total += iov[i].iov_len;
  size_t done = 0;
  if (out_queue_.empty()) {
    ssize_t r = WritevRetry(out_fd_.get(), iov, n);
    if (r < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        OutputFailed(-errno);
        return;
      }
      r = 0;
    }
    done = static_cast<size_t>(r);
  }
  if (done == total) return;
  // Frames leave in order: the rest waits, copied, behind what is queued.
  size_t skip = done;
  for (int i = 0; i < n; i++) {
    size_t l = iov[i].iov_len;
    if (skip >= l) {
      skip -= l;
      continue;
    }
    out_queue_.Append(static_cast<const char*>(iov[i].iov_base) + skip, l - skip);
    skip = 0;
  }
  if (congested()) was_congested_ = true;
  UpdateOutputPoll();
}

void RelayPump::OnOutput(uv_poll_t* handle, int status, int events) {
  RelayPump* self = static_cast<RelayPump*>(handle->data);
  if (self->closed_) return;
  // An error (status < 0) stopped the handle: the write below reports it.
  if (status < 0) self->out_polling_ = false;
  self->WriteQueued();
}

void RelayPump::WriteQueued() {
  while (!out_queue_.empty() && output_open()) {
    struct iovec iov[kMaxIov];
    size_t total = 0;
    int n = out_queue_.Peek(iov, kMaxIov, &total);
    ssize_t r = WritevRetry(out_fd_.get(), iov, n);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      OutputFailed(-errno);
      return;
    }
    out_queue_.Consume(static_cast<size_t>(r));
    if (static_cast<size_t>(r) < total) break;  // the kernel took what it had room for
  }
  if (out_queue_.empty() && end_output_) ShutdownOutput();
  UpdateOutputPoll();
  if (was_congested_ && !congested()) {
    was_congested_ = false;
    ResumeSources();
    delegate_->OnDrained();
  }
}

void RelayPump::OutputFailed(int err) {
  // A reader that went away (EPIPE), or the output closed behind our back
  // (EBADF). The peer may still be there to write to us (a via that
  // closed its stdin and lives on, its stdout still ours to read), but
  // nothing we send reaches it: no request of ours will be answered, so
  // the channel ends, as when the input ends.
  output_failed_ = true;
  out_queue_.Clear();
  UpdateOutputPoll();
  EndLater(err, kOutputFailed);
}

void RelayPump::UpdateOutputPoll() {
  bool want = !out_queue_.empty() && !out_closed_ && !output_failed_ && !closed_ && out_fd_;
  if (want && !out_polling_) {
    out_polling_ = uv_poll_start(&out_poll_, UV_WRITABLE, OnOutput) == 0;
  } else if (!want && out_polling_ && !out_closed_ && !closed_) {
    uv_poll_stop(&out_poll_);
    out_polling_ = false;
  }
}

void RelayPump::EndOutput() {
  end_output_ = true;
  if (out_queue_.empty()) ShutdownOutput();
}

void RelayPump::ShutdownOutput() {
  if (output_ended_ || out_closed_ || closed_) return;
  output_ended_ = true;
  // A pipe cannot be shut down: its reader sees end of file once it is closed.
  if (shutdown(out_fd_.get(), SHUT_WR) != 0 && errno == ENOTSOCK) CloseOutput();
}

void RelayPump::CloseOutput() {
  if (out_closed_ || closed_) return;
  out_closed_ = true;
  out_queue_.Clear();
  out_polling_ = false;
  out_number_.LetGoIfGone(&out_fd_);
  // uv_close takes the fd out of epoll at once, so closing it next is safe.
  uv_close(reinterpret_cast<uv_handle_t*>(&out_poll_), OnHandleClosed);
  out_fd_.reset();
}

// ---------------------------------------------------------------------------
// streams

int RelayPump::AddStream(uint32_t id, int fd, bool read, bool write, bool socket) {
  if (closed_) return -EBADF;
  if (streams_.count(id) != 0) return -EEXIST;
  if (!takeover_wake_made_) {
    int made = uv_async_init(loop_, &takeover_wake_, OnTakeOverWake);
    if (made != 0) return made;
    takeover_wake_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(&takeover_wake_));
    open_handles_++;
    takeover_wake_made_ = true;
    FdWakeOnTakeOvers(WakeForTakeOver, &takeover_wake_);
  }
  Stream* s = new Stream(&pool_);
  // Read before the registration (number.Init): a new fd of ours that
  // takes the number after it counts as moved at the next look (StillHeld).
  s->takeovers_seen = FdTakeOvers();
  int r = s->number.Init(loop_, fd);
  if (r != 0) {
    delete s;
    return r;
  }
  s->poll.data = s;
  s->pump = this;
  s->id = id;
  s->socket = socket;
  s->out_active = read;
  s->in_active = write;
  s->fd = UniqueFd(fd);
  open_handles_++;
  streams_[id] = s;
  UpdateStreamPoll(s);
  return 0;
}

void RelayPump::OnStream(uv_poll_t* handle, int status, int events) {
  Stream* s = static_cast<Stream*>(handle->data);
  RelayPump* self = s->pump;
  if (self->closed_ || s->removed || !s->fd) return;
  if (status < 0) {
    // libuv stopped the handle (POLLERR: a pipe's reader gone, a socket's
    // error): try what the stream waits for, and let that fail.
    s->events = 0;
    events = UV_READABLE | UV_WRITABLE;
    if (!s->socket && s->in_active && s->pending.empty()) {
      // A pipe's write end with nothing to write: POLLERR is its reader's
      // close (pipe(7)), which no write tells until the peer sends more.
      self->StopSink(s);
      return;
    }
  }
  if ((events & UV_WRITABLE) && s->in_active && !s->pending.empty()) {
    self->WritePending(s);
    if (s->removed || !s->fd || self->closed_) return;
  }
  if ((events & UV_READABLE) && s->out_active) {
    if (self->ReadSource(s, false) == Read::kEnded) {
      self->SourceEnded(s, true);
      return;
    }
  }
  self->UpdateStreamPoll(s);
}

RelayPump::Read RelayPump::ReadSource(Stream* s, bool flush) {
  if (!s->out_active || s->credit <= 0 || !output_open() || (!flush && congested())) return Read::kEmpty;
  if (!StillHeld(s)) return Read::kEmpty;  // its halves end on the loop's next turn
  if (!src_buf_) src_buf_.reset(new char[kReadBytes]);
  size_t want = std::min(static_cast<size_t>(s->credit), kReadBytes);
  ssize_t r = ReadRetry(s->fd.get(), src_buf_.get(), want);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Read::kEmpty;
    return Read::kEnded;  // a failed read ends the stream: the peer sees end of file
  }
  if (r == 0) return Read::kEnded;
  // DATA frames of at most kMaxDataBytes, each header before its piece, in one writev.
  constexpr int kFrames = static_cast<int>((kReadBytes + kMaxDataBytes - 1) / kMaxDataBytes);
  char heads[kFrames][kHeaderBytes];
  struct iovec iov[2 * kFrames];
  int n = 0;
  size_t got = static_cast<size_t>(r);
  for (size_t off = 0; off < got; off += kMaxDataBytes) {
    size_t len = std::min(kMaxDataBytes, got - off);
    char* h = heads[n / 2];
    Header(h, kData, s->id, static_cast<uint32_t>(len));
    iov[n++] = {h, kHeaderBytes};
    iov[n++] = {src_buf_.get() + off, len};
  }
  Output(iov, n);
  s->credit -= static_cast<int64_t>(got);
  s->bytes_out += got;
  return Read::kMore;
}

bool RelayPump::Flush(uint32_t id) {
  Stream* s = Find(id);
  if (s == nullptr || !s->out_active || !s->fd) return false;
  Read r;
  while ((r = ReadSource(s, true)) == Read::kMore) {
  }
  if (r != Read::kEnded) return false;
  SourceEnded(s, false);
  return true;
}

void RelayPump::SourceEnded(Stream* s, bool notify) {
  Send(kEof, s->id, nullptr, 0);
  HalfDone(s, kOut, notify);
}

void RelayPump::SinkData(Stream* s, const char* data, size_t len) {
  if (len == 0) return;
  // What the peer may have unacknowledged is its window (a JavaScript
  // sender can pass it by one read): past twice that it is not honouring it.
  if (s->pending.size() + s->owed + len > 2 * static_cast<uint64_t>(kStreamWindow)) {
    End(kProtocolError, "stream " + std::to_string(s->id) + ": the peer sent past its window");
    return;
  }
  // Bytes for an fd let go of are dropped: its sink stops on the loop's next turn.
  if (!StillHeld(s)) return;
  s->bytes_in += len;
  size_t done = 0;
  if (s->pending.empty()) {
    ssize_t r;
    do r = write(s->fd.get(), data, len);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        StopSink(s);
        return;
      }
      r = 0;
    }
    done = static_cast<size_t>(r);
  }
  if (done < len) s->pending.Append(data + done, len - done);
  if (done > 0) SinkWritten(s, done);
  UpdateStreamPoll(s);
}

void RelayPump::SinkWritten(Stream* s, size_t n) {
  s->owed += n;
  // Credit goes back in batches: a quarter window, or whatever is owed once nothing is left to write.
  if (s->owed >= static_cast<uint64_t>(kStreamWindow / 4) || s->pending.empty()) {
    SendCredit(s->id, s->owed);
    s->owed = 0;
  }
}

void RelayPump::WritePending(Stream* s) {
  while (!s->pending.empty()) {
    if (!StillHeld(s)) return;  // its halves end on the loop's next turn
    struct iovec iov[kMaxIov];
    size_t total = 0;
    int n = s->pending.Peek(iov, kMaxIov, &total);
    ssize_t r = WritevRetry(s->fd.get(), iov, n);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      StopSink(s);
      return;
    }
    s->pending.Consume(static_cast<size_t>(r));
    SinkWritten(s, static_cast<size_t>(r));
    if (static_cast<size_t>(r) < total) break;
  }
  if (s->pending.empty() && s->eof_received) {
    EndSink(s);
    return;
  }
  UpdateStreamPoll(s);
}

void RelayPump::EndSink(Stream* s) {
  // Every byte before the end of file is written: a socket is shut down
  // for writing (its other direction goes on); a pipe's reader sees end of
  // file once this write end is closed (HalfDone, no half being left).
  if (s->socket && StillHeld(s)) shutdown(s->fd.get(), SHUT_WR);
  HalfDone(s, kIn, true);
}

void RelayPump::StopSink(Stream* s) {
  // The local fd takes no more: the peer stops sending.
  Send(kStop, s->id, nullptr, 0);
  HalfDone(s, kIn, true);
}

void RelayPump::HalfDone(Stream* s, int half, bool notify) {
  if (half == kOut) {
    s->out_active = false;
  } else {
    s->in_active = false;
    s->pending.Clear();
  }
  if (!s->out_active && !s->in_active) {
    CloseStreamFd(s);
  } else {
    UpdateStreamPoll(s);
  }
  uint32_t id = s->id;
  // Last: the delegate may remove the stream.
  if (notify) delegate_->OnStreamDone(id, half);
}

void RelayPump::UpdateStreamPoll(Stream* s) {
  if (!s->fd || s->removed || closed_) return;
  int ev = 0;
  if (s->out_active && s->credit > 0 && !congested() && output_open()) ev |= UV_READABLE;
  if (s->in_active && !s->pending.empty()) ev |= UV_WRITABLE;
  // A pipe's write end with nothing to write is still watched for its
  // reader's close (POLLERR, which epoll reports whatever is asked: the
  // poll is registered for no more than that), so that a stream whose
  // reader over here is gone ends now, not when the peer next sends bytes
  // (which would be read from the peer's fd and lost).
  if (ev == 0 && s->in_active && !s->socket) ev = UV_DISCONNECT;
  if (ev == s->events) return;
  if (ev == 0) {
    uv_poll_stop(&s->poll);
  } else if (uv_poll_start(&s->poll, ev, OnStream) != 0) {
    ev = 0;
  }
  s->events = ev;
}

void RelayPump::ResumeSources() {
  for (auto& entry : streams_) UpdateStreamPoll(entry.second);
}

void RelayPump::CloseStreamFd(Stream* s) {
  if (s->handle_closing) return;
  s->handle_closing = true;
  s->events = 0;
  s->number.LetGoIfGone(&s->fd);
  // uv_close takes the fd out of epoll at once, so closing it next is safe.
  uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), OnStreamClosed);
  if (s->socket && s->fd) {
    // Never on this thread, an event loop's (SetCloseOwner).
    int fd = s->fd.release();
    close_tickets_.push_back(FdCloseInBackground(&fd, 1, close_owner_, /*held_for_peer=*/false));
    // Amortized: a long-lived pump keeps only the closes not yet done.
    if (close_tickets_.size() > 64) FdDropDoneTickets(&close_tickets_);
  } else {
    s->fd.reset();
  }
}

std::vector<uint64_t> RelayPump::CloseTickets() {
  FdDropDoneTickets(&close_tickets_);
  return close_tickets_;
}

void RelayPump::OnStreamClosed(uv_handle_t* handle) {
  Stream* s = static_cast<Stream*>(handle->data);
  RelayPump* self = s->pump;
  s->handle_closed = true;
  if (s->removed) delete s;
  self->HandleGone();
}

void RelayPump::RemoveStream(uint32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  Stream* s = it->second;
  streams_.erase(it);
  s->removed = true;
  if (s->handle_closed) {
    delete s;
  } else {
    CloseStreamFd(s);
  }
}

bool RelayPump::StreamBytes(uint32_t id, uint64_t* in, uint64_t* out) const {
  Stream* s = Find(id);
  if (s == nullptr) return false;
  *in = s->bytes_in;
  *out = s->bytes_out;
  return true;
}

// ---------------------------------------------------------------------------
// teardown

void RelayPump::Close(void (*on_freed)(void*), void* arg) {
  if (closed_) return;
  closed_ = true;
  on_freed_ = on_freed;
  freed_arg_ = arg;
  for (auto& entry : streams_) {
    Stream* s = entry.second;
    s->removed = true;
    if (s->handle_closed) {
      delete s;
    } else {
      CloseStreamFd(s);
    }
  }
  streams_.clear();
  out_queue_.Clear();
  input_done_ = true;
  CloseEndLater();
  if (taken_later_made_) uv_close(reinterpret_cast<uv_handle_t*>(&taken_later_), OnHandleClosed);
  taken_.clear();
  if (takeover_wake_made_) {
    FdStopWakeOnTakeOvers(&takeover_wake_);  // no wake comes once it returns
    uv_close(reinterpret_cast<uv_handle_t*>(&takeover_wake_), OnHandleClosed);
  }
  in_number_.LetGoIfGone(&in_fd_);
  uv_close(reinterpret_cast<uv_handle_t*>(&in_poll_), OnHandleClosed);
  in_fd_.reset();
  if (!out_closed_) {
    out_closed_ = true;
    out_number_.LetGoIfGone(&out_fd_);
    uv_close(reinterpret_cast<uv_handle_t*>(&out_poll_), OnHandleClosed);
    out_fd_.reset();
  }
}

void RelayPump::OnHandleClosed(uv_handle_t* handle) {
  static_cast<RelayPump*>(handle->data)->HandleGone();
}

void RelayPump::HandleGone() {
  if (--open_handles_ > 0 || !closed_) return;
  void (*cb)(void*) = on_freed_;
  void* arg = freed_arg_;
  delete this;
  if (cb != nullptr) cb(arg);
}

}  // namespace fdbridge
