// A count of fds held for clients against a limit, shared by many sockets.
// A helper daemon charges the fds each client leaves with its command (a
// frame channel's ledger) to that client's uid's budget, whose parent is the
// daemon's total: no uid can take every fd, and the daemon as a whole
// stays below RLIMIT_NOFILE (accept4 and recvmsg would otherwise start
// failing for every client). Plain C++, no libuv, no Node-API.
//
// Not thread-safe: every socket charging one budget (and its parents) runs
// on one event loop's thread.
#ifndef FDBRIDGE_FD_BUDGET_H_
#define FDBRIDGE_FD_BUDGET_H_

#include <stddef.h>

#include <memory>

namespace fdbridge {

class FdBudget {
 public:
  FdBudget(size_t limit, std::shared_ptr<FdBudget> parent) : limit_(limit), parent_(std::move(parent)) {}
  FdBudget(const FdBudget&) = delete;
  FdBudget& operator=(const FdBudget&) = delete;

  // Whether `n` more fit here and in every budget above. `extra_at_root` is
  // added at the top (fds the process holds that no socket charged: those
  // waiting for the background closer), `extra_here` here only (those of
  // them that this budget's owner gave).
  bool Fits(size_t n, size_t extra_at_root = 0, size_t extra_here = 0) const {
    for (const FdBudget* b = this; b != nullptr; b = b->parent_.get()) {
      size_t held = b->held_ + n + (b->parent_ == nullptr ? extra_at_root : 0) + (b == this ? extra_here : 0);
      if (held > b->limit_) return false;
    }
    return true;
  }
  // Charges `n` here and above, fitting or not (a caller that checked Fits,
  // or fds already here that must be counted).
  void Charge(size_t n) {
    for (FdBudget* b = this; b != nullptr; b = b->parent_.get()) b->held_ += n;
  }
  void Refund(size_t n) {
    for (FdBudget* b = this; b != nullptr; b = b->parent_.get()) b->held_ -= n < b->held_ ? n : b->held_;
  }
  size_t held() const { return held_; }
  size_t limit() const { return limit_; }
  void set_limit(size_t limit) { limit_ = limit; }

  // fds of messages read for this budget's sockets (or its children's)
  // that wait in a message batch to be handed to JS (MessageBatch): in
  // this process, and counted nowhere else until JS has put them in a
  // ledger (Charge) or given them to the closer. Here and in every budget
  // above, as Charge is.
  void HoldUnsettled(size_t n) {
    for (FdBudget* b = this; b != nullptr; b = b->parent_.get()) b->unsettled_ += n;
  }
  void ReleaseUnsettled(size_t n) {
    for (FdBudget* b = this; b != nullptr; b = b->parent_.get()) b->unsettled_ -= n < b->unsettled_ ? n : b->unsettled_;
  }
  size_t unsettled() const { return unsettled_; }
  // Whether fds wait unsettled here or in any budget above (the top one
  // counts them all).
  bool ChainUnsettled() const {
    const FdBudget* top = this;
    while (top->parent_ != nullptr) top = top->parent_.get();
    return top->unsettled_ != 0;
  }

  // Whether a socket charging this budget may read another message now
  // (UnixSocket::SetReadBudget): in this budget and every one above, either
  // nothing waits unsettled, or what is held, unsettled and waiting for the
  // closer (`extra_at_root` at the top, `extra_here` here, as in Fits) is
  // within the limit. So a budget goes past its limit by one message at
  // most in a turn of the loop, however many sockets (of however many
  // children) charge it: the daemon's total as each uid's.
  bool MayRead(size_t extra_at_root, size_t extra_here) const {
    for (const FdBudget* b = this; b != nullptr; b = b->parent_.get()) {
      if (b->unsettled_ == 0) continue;
      size_t held = b->held_ + b->unsettled_ + (b->parent_ == nullptr ? extra_at_root : 0) + (b == this ? extra_here : 0);
      if (held > b->limit_) return false;
    }
    return true;
  }

 private:
  size_t held_ = 0;
  size_t unsettled_ = 0;
  size_t limit_;
  std::shared_ptr<FdBudget> parent_;
};

}  // namespace fdbridge

#endif  // FDBRIDGE_FD_BUDGET_H_
