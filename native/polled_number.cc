#include "polled_number.h"

#include <unordered_map>

// Letting go of a number sets the handle's io_watcher.fd to -1, a field of
// libuv's Unix implementation, and relies on what libuv does with it on
// Linux (the same from libuv 1.46, Node 20's, to 1.52, Node 24's):
// - src/unix/core.c, uv__io_stop: returns at once for a watcher whose fd is
//   -1 (`if (w->fd == -1) return;`), before it looks at loop->watchers;
// - src/unix/poll.c, uv__poll_stop (run by uv_poll_stop and uv_close): then
//   calls uv__platform_invalidate_fd(loop, -1);
// - src/unix/linux.c, uv__platform_invalidate_fd: invalidates the pending
//   events of fd -1 (there are none) and its EPOLL_CTL_DEL of -1 fails with
//   EBADF, which it ignores (directly, or in 1.46 through
//   uv__epoll_ctl_prep and uv__epoll_ctl_flush, which skip a failed DEL).
// uv__io_start asserts a watcher's fd is not negative: a poll let go of is
// never started again (each owner holds to that). Other platforms' backends
// (kqueue, event ports) forget a number otherwise; fdbridge is built for
// Linux only (package.json "os").
#ifndef __linux__
#error "PolledNumber::LetGo relies on libuv's Linux backend (see above)"
#endif

namespace fdbridge {

namespace {

// This thread's polls by number (a poll lives on the thread of its loop).
std::unordered_map<int, PolledNumber*>& ThreadPolls() {
  thread_local std::unordered_map<int, PolledNumber*> polls;
  return polls;
}

}  // namespace

int PolledNumber::Init(uv_loop_t* loop, int fd) {
  known_ = FdFileIdentity(fd, &file_) == 0;
  auto& polls = ThreadPolls();
  auto previous = polls.find(fd);
  if (previous != polls.end() && previous->second != this && previous->second->poll_->loop == loop) {
    PolledNumber* p = previous->second;
    p->on_taken_(p->owner_, file_, known_);  // lets go (and leaves the table) unless it still holds that file
  }
  // Read once the poll there has let go: its LetGo ends the old fd's
  // registration, which the number still showed if the program opened this
  // file there itself.
  registration_ = FdRegistration(fd);
  int r = uv_poll_init(loop, poll_, fd);
  if (r != 0) return r;
  polls[fd] = this;
  number_ = fd;
  fd_ = fd;
  return 0;
}

void PolledNumber::Forget() {
  if (fd_ < 0) return;
  auto& polls = ThreadPolls();
  auto entry = polls.find(fd_);
  if (entry != polls.end() && entry->second == this) polls.erase(entry);
  fd_ = -1;
}

void PolledNumber::LetGo() {
  Forget();
  if (let_go_) return;
  let_go_ = true;
  FdStillHeldLooked(number_, registration_, false);
  uv_handle_t* handle = reinterpret_cast<uv_handle_t*>(poll_);
  if (uv_is_closing(handle)) return;  // uv_close has stopped it and deleted its entry already
  // Started, the poll holds loop->watchers[fd], which no other handle can
  // share (uv_poll_init, uv_pipe_open: EEXIST): its stop's EPOLL_CTL_DEL
  // can only meet this poll's own entry, or none. Stopped, it is not
  // stopped again: that DEL could meet another handle's entry.
  if (uv_is_active(handle)) uv_poll_stop(poll_);
  poll_->io_watcher.fd = -1;  // see the top of this file
}

bool PolledNumber::YieldTo(const FdIdentity& file, bool known, UniqueFd* fd) {
  if (!*fd || let_go_) return false;
  // A new poll of the same fd meets this one's (EEXIST). The same file is
  // not the same fd: a new fd of ours at the number (a new registration
  // there) means ours was closed, whatever file the new one holds.
  if (Same(file, known) && StillRegistered()) return false;
  LetGo();
  fd->release();
  return true;
}

void PolledNumber::LetGoIfGone(UniqueFd* fd) {
  Forget();
  if (let_go_ || !*fd) return;
  // Still ours: the same file, and no new fd of ours at the number (the
  // same file is not the same fd: a new registration there means ours was
  // closed and the fd is the new owner's).
  if (Holds(fd->get()) && StillRegistered()) return;
  LetGo();
  fd->release();
}

bool PolledNumber::StillRegistered() const {
  return registration_ == 0 || FdRegistration(number_) == registration_;
}

bool PolledNumber::Holds(int fd) const {
  if (!known_) return true;  // nothing known to compare with
  return FdHoldsFile(fd, file_);
}

}  // namespace fdbridge
