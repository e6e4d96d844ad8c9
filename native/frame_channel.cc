#include "frame_channel.h"

#include <algorithm>
#include <errno.h>

#include <optional>
#include <utility>
#include <vector>

#include "fd_ops.h"
#include "frame_format.h"

namespace fdbridge {

FrameChannel::FrameChannel(UnixSocket* socket, Delegate* delegate) : socket_(socket), delegate_(delegate) {
  socket_->SetFilter(this);
}

FrameChannel::~FrameChannel() {
  if (socket_ != nullptr) socket_->SetFilter(nullptr);
  Sweep();
}

int FrameChannel::Send(Kind kind, const int* fds, size_t nfds, char* frame, size_t len, bool exempt, bool own,
                       Request request) {
  if (socket_ == nullptr) return -EBADF;
  uint32_t id = next_id_;
  const char* data = frame;
  const int* send_fds = nullptr;
  size_t send_nfds = 0;
  switch (kind) {
    case Kind::kDup:
      if (nfds == 0 || nfds > frame::kMaxFdsPerFrame) return -EINVAL;
      scratch_.resize(frame::kHeaderBytes);
      frame::EncodeHeader(scratch_.data(), frame::kDup, id);
      data = scratch_.data();
      len = frame::kHeaderBytes;
      send_fds = fds;
      send_nfds = nfds;
      request.fds = static_cast<uint32_t>(nfds);
      break;
    case Kind::kGetfd: {
      if (nfds == 0 || nfds > frame::kMaxFdsPerFrame) return -EINVAL;
      // Each pin's file as it was made (given to this socket's closer
      // owner: FdDupAllGiven), for the far side to check its pull against.
      // A pin that is no longer one (closed behind fdbridge's back, its
      // number taken by a new fd of ours) fails the request unsent.
      pin_files_.resize(nfds);
      if (FdGivenFiles(fds, nfds, socket_->background_close_owner(), pin_files_.data()) != 0) return -EBADF;
      pinned_.resize(nfds);
      for (size_t i = 0; i < nfds; i++) pinned_[i] = {pin_files_[i].dev, pin_files_[i].ino};
      scratch_.resize(frame::PinListBytes(nfds));
      len = frame::EncodeGetfd(scratch_.data(), id, fds, pinned_.data(), nfds);
      data = scratch_.data();
      request.fds = static_cast<uint32_t>(nfds);
      break;
    }
    case Kind::kFrame:
      if (frame == nullptr || len < frame::kHeaderBytes) return -EINVAL;
      frame::WriteU32(frame + 4, id);
      request.fds = 0;
      break;
  }
  uint32_t send_id = socket_->NewSendId();
  int r;
  {
    // A caller's numbers: one of ours is refused as closed, checked and
    // sent under one lock (fd_ops.h, OwnedFdsLock).
    OwnedFdsLock owned;
    r = own ? 0 : FdRefuseOwned(send_fds, send_nfds);
    // The data is copied before Send returns (when it is queued), so
    // scratch_ is free again for the next request.
    if (r == 0) r = socket_->Send(data, len, send_fds, send_nfds, send_id, exempt);
  }
  if (r < 0 || r == UnixSocket::kQueueFull) return r;
  next_id_ = next_id_ + 1 == 0 ? 1 : next_id_ + 1;  // id 0 is never a request's
  request.id = id;
  if (request.fds > 0) pending_dups_++;
  pending_.emplace(id, std::move(request));
  if (r == UnixSocket::kQueued) queued_.emplace(send_id, id);
  return r;
}

// The reply DupSync waits for: the first DUP_OK, ERROR or RESULT with its
// id; and its own send's completion, should the send have been queued.
// A message that fails the connection (FailsClient) ends the wait too, left
// held: handed on once the wait is over, it fails the connection and every
// request, and nothing read after it can answer this one. The held replies
// settle their requests only then: the ids they answer are remembered here,
// and a second reply to one of them answers no request.
class FrameChannel::SyncWaiter : public UnixSocket::Waiter {
 public:
  SyncWaiter(const FrameChannel* channel, uint32_t id, uint32_t send_id, SyncDup* out)
      : channel_(channel), id_(id), send_id_(send_id), out_(out) {}

  bool TakeMessage(const char* data, size_t len, const int* fds, size_t nfds) override {
    uint8_t type = len < frame::kHeaderBytes ? 0 : static_cast<uint8_t>(data[0]);
    if (len < frame::kHeaderBytes || frame::ReadU32(data + 4) != id_ ||
        (type != frame::kDupOk && type != frame::kError && type != frame::kResult)) {
      if (channel_->FailsClient(data, len, nfds, answered_)) {
        done_ = failing_ = true;
      } else if (len >= frame::kHeaderBytes) {
        answered_.push_back(frame::ReadU32(data + 4));
      }
      return false;
    }
    done_ = true;
    UniqueFds unexpected(fds, nfds);  // the far side never sends fds: closed here
    out_->fds_closed = nfds;
    frame::Decoded f;
    if (frame::Decode(data, len, nfds, &f) && f.header.type == frame::kDupOk && f.count == 1) {
      out_->status = SyncDup::kFd;
      out_->fd = frame::FdAt(data, 0);
    } else {
      out_->status = SyncDup::kReply;
      out_->reply.assign(data, data + len);
    }
    return true;
  }

  bool TakeSendComplete(uint32_t id, int err) override {
    if (id != send_id_ || !queued_) return false;
    queued_ = false;
    if (err != 0 && !done_) {
      // The request never left, and was never pending: nothing else waits
      // on it. Reported as a send that fails at once is, with its errno
      // (the caller tells the peer's end, EPIPE or ECONNRESET, from an
      // error of this request alone).
      done_ = true;
      out_->status = SyncDup::kNotSent;
      out_->err = err;
    }
    return true;
  }

  bool done() const override { return done_; }
  void set_queued() { queued_ = true; }
  bool queued() const { return queued_; }
  // The wait ended on a message that fails the connection, not on a reply.
  bool failing() const { return failing_; }

 private:
  const FrameChannel* channel_;
  uint32_t id_;
  uint32_t send_id_;
  SyncDup* out_;
  bool done_ = false;
  bool queued_ = false;
  bool failing_ = false;
  // The requests answered by the messages held so far (FailsClient passed
  // them: each a reply to a pending request).
  std::vector<uint32_t> answered_;
};

FrameChannel::SyncDup FrameChannel::DupSync(int fd, int timeout_ms) {
  SyncDup out;
  if (socket_ == nullptr) {
    out.status = SyncDup::kGone;
    out.err = -ENOTCONN;
    return out;
  }
  const int64_t deadline = UnixSocket::MonotonicMs() + timeout_ms;
  uint32_t id = next_id_;
  char header[frame::kHeaderBytes];
  frame::EncodeHeader(header, frame::kDup, id);
  uint32_t send_id = socket_->NewSendId();
  int r;
  {
    OwnedFdsLock owned;  // as in Send; not held for the wait
    r = FdRefuseOwned(&fd, 1);
    if (r == 0) r = socket_->Send(header, sizeof header, &fd, 1, send_id);
  }
  if (r < 0 || r == UnixSocket::kQueueFull) {
    out.status = r < 0 ? SyncDup::kNotSent : SyncDup::kQueueFull;
    out.err = r < 0 ? r : 0;
    return out;
  }
  next_id_ = next_id_ + 1 == 0 ? 1 : next_id_ + 1;
  bool queued = r == UnixSocket::kQueued;
  int w;
  for (;;) {
    SyncWaiter waiter(this, id, send_id, &out);
    if (queued) waiter.set_queued();
    w = socket_->WaitOnThread(&waiter, deadline);
    queued = waiter.queued();
    if (w != 0 || !waiter.failing()) break;
    // The message that ended the wait has been handed on: it closed the
    // socket, and this request failed with the connection. A delegate
    // that kept the connection leaves the request waiting for its reply.
    if (socket_ == nullptr) {
      out.status = SyncDup::kGone;
      return out;
    }
  }
  if (w == 0) return out;  // the waiter's outcome
  if ((w == -ETIMEDOUT || w == UnixSocket::kWaitWoken) && socket_ != nullptr) {
    out.status = w == -ETIMEDOUT ? SyncDup::kTimeout : SyncDup::kWoken;
    out.id = id;
    out.queued_send = queued ? send_id : 0;
    return out;
  }
  out.status = SyncDup::kGone;
  out.err = w == UnixSocket::kWaitEof ? 0 : w == -ETIMEDOUT || w == UnixSocket::kWaitWoken ? -ENOTCONN : w;
  return out;
}

void FrameChannel::KeepLate(const SyncDup& timed_out, Request late) {
  if ((timed_out.status != SyncDup::kTimeout && timed_out.status != SyncDup::kWoken) || socket_ == nullptr) return;
  late.id = timed_out.id;
  late.fds = 1;
  pending_dups_++;
  pending_.emplace(late.id, std::move(late));
  if (timed_out.queued_send != 0) queued_.emplace(timed_out.queued_send, timed_out.id);
}

FrameChannel::Request FrameChannel::Take(std::unordered_map<uint32_t, Request>::iterator it) {
  Request request = std::move(it->second);
  pending_.erase(it);
  if (request.fds > 0) pending_dups_--;
  return request;
}

std::vector<FrameChannel::Request> FrameChannel::TakeAll() {
  std::vector<Request> out;
  out.reserve(pending_.size());
  for (auto& entry : pending_) out.push_back(std::move(entry.second));
  pending_.clear();
  pending_dups_ = 0;
  queued_.clear();
  return out;
}

bool FrameChannel::FilterMessage(const char* data, size_t len, const int* fds, size_t nfds) {
  read_on_ = true;
  read_on_answered_ = false;
  // fds the kernel has just given this process: a number adopted here
  // before is free again only once the command closed that fd (without
  // closeClientFds). Refunded before any limit looks at the DUP they came
  // with: a client whose command closed what it adopted is not refused for
  // it (Keep charges them again should they be kept).
  if (nfds > 0 && !adopted_.empty()) ForgetAdopted(fds, nfds);
  frame::Decoded f;
  // Malformed: the delegate reports the violation (and closes the fds).
  if (!frame::Decode(data, len, nfds, &f)) return false;
  switch (f.header.type) {
    case frame::kDup:
      return serving_ && AnswerDup(f.header.id, fds, nfds);
    case frame::kGetfd:
      return pull_pidfd_ >= 0 && AnswerGetfd(f.header.id, data, f.count);
    case frame::kDupOk:
    case frame::kResult:
    case frame::kError:
      return !pending_.empty() && Settle(f.header.type, f.header.id, data, len, f.count);
    default:
      return false;
  }
}

bool FrameChannel::FailsClient(const char* data, size_t len, size_t nfds, const std::vector<uint32_t>& answered) const {
  if (serving_ || pull_pidfd_ >= 0) return false;
  frame::Decoded f;
  if (!frame::Decode(data, len, nfds, &f)) return true;
  auto it = pending_.find(f.header.id);
  if (it == pending_.end()) return true;
  for (uint32_t id : answered) {
    if (id == f.header.id) return true;
  }
  const Request& request = it->second;
  switch (f.header.type) {
    case frame::kError:
      return false;
    case frame::kDupOk:
      return request.fds == 0 || f.count != request.fds;
    case frame::kResult:
      return request.fds != 0;
    default:
      return true;
  }
}

bool FrameChannel::Settle(uint8_t type, uint32_t id, const char* data, size_t len, size_t count) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return false;  // a reply to no request: the delegate's to report
  Request request = Take(it);
  read_on_ = !pending_.empty();  // before the delegate, whose promise's reactions may send more
  if (type == frame::kDupOk && request.fds > 0 && count == request.fds) {
    delegate_->OnFds(request, data);
  } else if (type == frame::kResult && request.fds == 0) {
    delegate_->OnResult(request, data, len);
  } else {
    delegate_->OnFailedReply(request, data, len);
  }
  return true;
}

bool FrameChannel::Fits(size_t nfds) const {
  if (socket_->send_queue_full()) return false;
  if (held_count() + nfds > max_given_) return false;
  // fds peers gave us that wait for the closer are still ours: they count
  // against the total, and this peer's owner's against its own limit (our
  // own sockets count with the connections).
  return !budget_ || budget_->Fits(nfds, FdBackgroundClosesOfPeerFds(),
                                   close_given_in_background_ ? FdBackgroundClosesOfPeerFds(close_owner_) : 0);
}

bool FrameChannel::AnswerGetfd(uint32_t id, const char* data, size_t count) {
  if (!Fits(count)) return false;
  pull_numbers_.resize(count);
  pulled_.resize(count);
  pin_files_.resize(count);
  for (size_t i = 0; i < count; i++) {
    pull_numbers_[i] = frame::PinFdAt(data, i);
    frame::PinnedFile file = frame::PinFileAt(data, i);
    pin_files_[i] = {file.dev, file.ino, 0};
  }
  // All or none: a failed pull (or one that is another file than the
  // client pinned) closes what the others made, and the delegate, pulling
  // again, fails the request with the error.
  if (PidfdGetfdAllHigh(pull_pidfd_, pull_numbers_.data(), count, pulled_.data(), pin_files_.data()) < 0) return false;
  return Give(id, pulled_.data(), count);
}

bool FrameChannel::AnswerDup(uint32_t id, const int* fds, size_t nfds) {
  if (!Fits(nfds)) return false;
  return Give(id, fds, nfds);
}

bool FrameChannel::Give(uint32_t id, const int* fds, size_t nfds) {
  // The connection's until the command adopts them: registered as
  // fdbridge's since they arrived (Serve: UnixSocket::ReceiveOwnFds) or
  // were pulled (PidfdGetfdAllHigh).
  // This channel's copies from now on, each with its file as it is now (one
  // statx each, outside the registry's lock): a number the command closes
  // and another connection's fd takes is then told apart from them
  // (CloseGivenInBackground). A number already in the ledger that the
  // command closed has a new registration here, marked as well.
  if (given_mark_ != 0) {
    FdMarkGiven(fds, nfds, given_mark_);
    for (size_t i = 0; i < nfds; i++) Keep(fds[i], 0);
  } else {
    // Without a mark, each copy is kept with its registration (what tells
    // it apart once the command closed it), all read in one hold of the
    // registry's lock. Room for one message's fds, made once: Give's are
    // one DUP's or one GETFD's, never more.
    kept_registrations_.reserve(frame::kMaxFdsPerFrame);
    kept_registrations_.resize(nfds);
    FdRegistrations(fds, nfds, kept_registrations_.data());
    for (size_t i = 0; i < nfds; i++) Keep(fds[i], kept_registrations_[i]);
  }
  served_++;
  read_on_ = read_on_score_ > 0 || served_ % kReadOnProbeEvery == 0;
  read_on_answered_ = true;
  if (after_receive_hook_) {
    delegate_->AfterReceive();
    // The hook may have closed the socket: the ledger, these fds with it,
    // is swept, and there is nobody to answer.
    if (socket_ == nullptr) return true;
  }
  if (reply_.empty()) reply_.resize(frame::FdListBytes(frame::kMaxFdsPerFrame));
  size_t reply_len = frame::EncodeFdList(reply_.data(), frame::kDupOk, id, fds, nfds);
  // The reply carries no fds; queued if the socket is full, behind every
  // earlier reply (send id 0: nobody awaits its completion). It cannot meet
  // a full queue (checked above); a broken connection (EPIPE) shows up on
  // the read side.
  socket_->Send(reply_.data(), reply_len, nullptr, 0, 0);
  return true;
}

void FrameChannel::ReadOnFound(bool message) {
  // Only the read after an answered request counts (FilterMessage clears
  // the mark for every other message).
  if (!read_on_answered_) return;
  read_on_score_ = message ? std::min(read_on_score_ + 1, kReadOnScoreMax) : std::max(read_on_score_ - 1, kReadOnScoreMin);
}

bool FrameChannel::FilterSendComplete(uint32_t send_id, int err) {
  auto q = queued_.find(send_id);
  if (q == queued_.end()) return false;
  uint32_t id = q->second;
  queued_.erase(q);
  if (err == 0) return true;
  if (err == -EPIPE || err == -ECONNRESET) {
    // The peer is gone: this request fails with every other pending one,
    // with what the delegate learns of how the peer ended.
    delegate_->OnBroken(err);
    return true;
  }
  auto it = pending_.find(id);
  if (it == pending_.end()) return true;  // settled already (FailAll)
  Request request = Take(it);
  delegate_->OnSendFailed(request, err);
  return true;
}

void FrameChannel::OnSocketClose() {
  socket_ = nullptr;
  serving_ = false;
  pull_pidfd_ = -1;
  queued_.clear();
  // Received, given to nobody in the end: a closed connection releases them.
  Sweep();
  delegate_->OnDetached();
}

void FrameChannel::Serve(bool on, size_t max_given) {
  serving_ = on && socket_ != nullptr;
  max_given_ = max_given;
  if (!on) pull_pidfd_ = -1;
  if (socket_ != nullptr) socket_->ReceiveOwnFds(on);
}

void FrameChannel::ServePulls(int pidfd, size_t max_given) {
  pull_pidfd_ = socket_ != nullptr ? pidfd : -1;
  if (pull_pidfd_ >= 0) max_given_ = max_given;  // turned off, the cap stays as it was
}

void FrameChannel::CloseGivenInBackground(bool on) {
  close_given_in_background_ = on;
  if (socket_ != nullptr) close_owner_ = socket_->background_close_owner();
  if (!on || given_mark_ != 0) return;
  given_mark_ = FdNewCloseOwner();
  // Those kept already are registered (received as ours, or Add's).
  for (auto& entry : given_) FdMarkGiven(&entry.first, 1, given_mark_);
}

void FrameChannel::Add(int fd) {
  if (socket_ == nullptr) {
    CloseGiven(UniqueFd(fd));
    return;
  }
  FdMarkOwned(&fd, 1);  // the connection's until the command adopts it
  if (given_mark_ != 0) {
    FdMarkGiven(&fd, 1, given_mark_);  // as AnswerDup's
    Keep(fd, 0);
  } else {
    Keep(fd, FdRegistration(fd));
  }
}

void FrameChannel::Keep(int fd, uint64_t registration) {
  // A number already in the ledger is the same open fd (the kernel reuses a
  // number only once it is closed): it stays owned once.
  auto [it, added] = given_.try_emplace(fd);
  // A new registration at a number already in the ledger: the command
  // closed that copy and this fd took its number (Give).
  it->second.registration = registration;
  if (!added) return;
  it->second.fd.reset(fd);
  // A number adopted before is free again only once the command closed that
  // fd (without closeClientFds): its charge passes to this one.
  if (adopted_.erase(fd) > 0) return;
  if (budget_) budget_->Charge(1);
}

void FrameChannel::ChargeTo(std::shared_ptr<FdBudget> budget) {
  if (budget_) budget_->Refund(held_count());
  budget_ = std::move(budget);
  if (budget_) budget_->Charge(held_count());
  // What the socket reads is gated by the same budget (UnixSocket::SetReadBudget).
  if (socket_ != nullptr) socket_->SetReadBudget(budget_);
}

void FrameChannel::Drop(std::unordered_map<int, Given>::iterator it) {
  it->second.fd.release();
  given_.erase(it);
  if (budget_) budget_->Refund(1);
}

bool FrameChannel::Adopt(int fd) {
  auto it = given_.find(fd);
  if (it == given_.end()) return false;
  // The command's now, no longer one of fdbridge's own (a caller may name
  // it). A copy given under the channel's mark is disowned only while its
  // number still has that registration and holds the file it was given
  // with (FdDisownGiven): otherwise the command closed this copy, and the
  // number is free, or another connection's fd of ours now, or a file
  // nobody gave it: not this command's to adopt. Unmarked, only while the
  // number has the registration the copy was kept with and is open
  // (FdDisownHeld: nothing else is known of its file).
  std::optional<FdIdentity> given_file;
  bool disowned = given_mark_ == 0 ? FdDisownHeld(fd, it->second.registration)
                                   : FdDisownGiven(fd, given_mark_, &given_file);
  if (!disowned) {
    Drop(it);
    return false;
  }
  it->second.fd.release();  // the adopter's now
  given_.erase(it);
  // Still in this process, held for the client: charged until the command
  // closes it. Its file is the one it was marked given with, read as it was
  // received (FdMarkGiven), not read again: the client's file, whatever the
  // number holds now (a file the program opened there after the command
  // closed the copy is not the client's, and ReclaimClosedAdopted refunds
  // it). Read here only for a copy given unmarked or whose file could not
  // be read then.
  if (keep_adopted_charged_ && socket_ != nullptr) {
    AdoptedFile& file = adopted_[fd];
    if (given_file) {
      file.known = true;
      file.identity = *given_file;
    } else {
      file.known = FdFileIdentity(fd, &file.identity) == 0;
    }
    return true;
  }
  if (budget_) budget_->Refund(1);
  return true;
}

FrameChannel::Released FrameChannel::Release(int fd) {
  auto it = given_.find(fd);
  if (it == given_.end()) return Released::kNotHeld;
  if (!StillGiven(fd, it->second.registration)) {  // as in Adopt: not this channel's to close
    Drop(it);
    return Released::kDropped;
  }
  it->second.fd.release();  // the caller's to close now
  given_.erase(it);
  if (budget_) budget_->Refund(1);
  return Released::kReleased;
}

size_t FrameChannel::ForgetAdopted(const int* fds, size_t n) {
  size_t forgotten = 0;
  for (size_t i = 0; i < n; i++) forgotten += adopted_.erase(fds[i]);
  if (budget_) budget_->Refund(forgotten);
  return forgotten;
}

int FrameChannel::CloseClientFds(const int* fds, size_t n, const uint64_t* installs, uint64_t* ticket, int* refused) {
  // A copy still in the ledger (given, not adopted) is not the client's to
  // close, even once the command closed it itself and an fd fdbridge no
  // longer holds took the number (another client's fd its command adopted).
  std::vector<std::optional<FdIdentity>> expected(n);
  for (size_t i = 0; i < n; i++) {
    if (given_.count(fds[i]) != 0) {
      *ticket = 0;
      *refused = fds[i];
      return -EBADF;
    }
    auto it = adopted_.find(fds[i]);
    if (it != adopted_.end() && it->second.known) expected[i] = it->second.identity;
  }
  int r = socket_ != nullptr ? socket_->CloseClientFdsInBackground(fds, n, expected.data(), installs, ticket, refused)
                             : FdCloseClientFdsInBackground(fds, n, close_owner_, expected.data(), installs, ticket, refused);
  if (r == 0) ForgetAdopted(fds, n);
  return r;
}

size_t FrameChannel::ReclaimClosedAdopted() {
  size_t reclaimed = 0;
  for (auto it = adopted_.begin(); it != adopted_.end();) {
    if (FdFileGone(it->first, it->second.known, it->second.identity)) {
      it = adopted_.erase(it);
      reclaimed++;
    } else {
      ++it;
    }
  }
  if (budget_) budget_->Refund(reclaimed);
  return reclaimed;
}

void FrameChannel::CloseGiven(UniqueFd fd) {
  if (!close_given_in_background_) return;  // it closes here, going out of scope
  int n = fd.release();
  FdCloseInBackground(&n, 1, close_owner_, /*held_for_peer=*/true);
}

size_t FrameChannel::Sweep() {
  size_t n = given_.size();
  if (close_given_in_background_ && n > 0) {
    std::vector<int> fds;
    fds.reserve(n);
    for (auto& entry : given_) fds.push_back(entry.second.fd.release());
    // Only the numbers still this channel's copies (given_mark_), each
    // while it holds the file it was given with.
    if (socket_ != nullptr) {
      socket_->CloseGivenInBackground(fds.data(), fds.size(), given_mark_);
    } else {
      FdCloseGivenInBackground(fds.data(), fds.size(), close_owner_, given_mark_);
    }
  } else {
    // Closed here, each only while it is still this channel's copy
    // (StillGiven): one the command closed itself whose number another fd
    // of ours took since is that fd's, left alone.
    for (auto& entry : given_) {
      int fd = entry.second.fd.release();
      if (StillGiven(fd, entry.second.registration)) FdClose(fd);
    }
  }
  given_.clear();
  if (budget_) budget_->Refund(n + adopted_.size());
  adopted_.clear();
  return n;
}

}  // namespace fdbridge
