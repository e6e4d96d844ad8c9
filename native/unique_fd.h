// Owning file-descriptor types. Plain POSIX, no Node-API, no libuv.
//
// UniqueFd holds one fd and closes it when it goes out of scope, is reset or
// is assigned over; release() hands the fd on without closing it. UniqueFds
// does the same for a set (the fds of one received message, a queued send's
// duplicates), in one contiguous array that can be passed to sendmsg.
//
// Both are move-only: an fd has exactly one owner. A moved-from object holds
// nothing. Closing goes through FdClose (fd_ops.h): on Linux close(2)
// releases the descriptor even when it returns EINTR, so it is never retried
// (a retry could close a number another thread has just been given). errno is
// kept across the close, so `return -errno;` after a failed call is safe with
// an owner going out of scope in the same statement.
//
// Invariants checked in a debug build (assert; release builds define NDEBUG):
// an owned fd is never negative, an owner is never reset to the fd it already
// holds (that would close the fd it is taking), and an owned fd is still open
// when its owner closes it (EBADF there means some other code closed a number
// it did not own: a double close, which on a busy process closes a stranger's
// fd), unless it is registered as fdbridge's (fd_ops.h): the caller may
// close such a number behind fdbridge's back (it is a number the caller can
// name), which FdClose notes for a leak check to blame (FdClosedByOther).
#ifndef FDBRIDGE_UNIQUE_FD_H_
#define FDBRIDGE_UNIQUE_FD_H_

#include <assert.h>
#include <errno.h>
#include <stddef.h>

#include <utility>
#include <vector>

#include "fd_ops.h"

namespace fdbridge {

namespace internal {

// Closes an owned fd, keeping errno.
inline void CloseOwnedFd(int fd) {
  int saved = errno;
#ifndef NDEBUG
  bool registered = FdRegistration(fd) != 0;
#endif
  int r = FdClose(fd);
  assert((r != -EBADF || registered) && "an owned fd was closed by someone else (double close)");
  (void)r;
  errno = saved;
}

}  // namespace internal

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd`; a negative value (a failed call's -errno, or -1)
  // makes an empty owner, so `UniqueFd fd(SockAccept(l)); if (!fd) ...` works.
  explicit UniqueFd(int fd) : fd_(fd < 0 ? -1 : fd) {}
  ~UniqueFd() { reset(); }

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

  // The fd, no longer owned here: the caller closes it.
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

  // Closes the fd held (if any) and takes `fd` (negative: holds nothing).
  void reset(int fd = -1) {
    assert((fd < 0 || fd != fd_) && "reset to the fd already owned would close it");
    if (fd_ >= 0) internal::CloseOwnedFd(fd_);
    fd_ = fd < 0 ? -1 : fd;
  }

 private:
  int fd_ = -1;
};

class UniqueFds {
 public:
  UniqueFds() = default;
  // Takes ownership of every fd in `fds` (all must be open, none negative).
  explicit UniqueFds(std::vector<int> fds) : fds_(std::move(fds)) { AssertValid(); }
  // Takes ownership of fds[0..n).
  UniqueFds(const int* fds, size_t n) : fds_(fds, fds + n) { AssertValid(); }
  ~UniqueFds() { reset(); }

  UniqueFds(UniqueFds&& other) noexcept : fds_(other.release()) {}
  UniqueFds& operator=(UniqueFds&& other) noexcept {
    if (this != &other) {
      reset();
      fds_ = other.release();
    }
    return *this;
  }
  UniqueFds(const UniqueFds&) = delete;
  UniqueFds& operator=(const UniqueFds&) = delete;

  size_t size() const { return fds_.size(); }
  bool empty() const { return fds_.empty(); }
  // The fds in order, still owned here (e.g. for sendmsg: sending borrows).
  const int* data() const { return fds_.data(); }
  int operator[](size_t i) const {
    assert(i < fds_.size());
    return fds_[i];
  }
  void reserve(size_t n) { fds_.reserve(n); }

  // Adds an fd to the set (its owner gives it up).
  void push_back(UniqueFd fd) {
    assert(fd && "an empty owner added to a set");
    fds_.push_back(fd.release());
  }

  // Every fd, in order, no longer owned here.
  std::vector<int> release() {
    std::vector<int> out;
    out.swap(fds_);
    return out;
  }
  // Copies the fds into out[0..size()) and gives them up; the set keeps its
  // capacity, so one set reused per message allocates once.
  void release_into(int* out) {
    for (size_t i = 0; i < fds_.size(); i++) out[i] = fds_[i];
    fds_.clear();
  }

  // Closes every fd held (the capacity stays).
  void reset() {
    for (int fd : fds_) internal::CloseOwnedFd(fd);
    fds_.clear();
  }

 private:
  void AssertValid() const {
#ifndef NDEBUG
    for (int fd : fds_) assert(fd >= 0 && "a negative fd in an owned set");
#endif
  }

  std::vector<int> fds_;
};

}  // namespace fdbridge

#endif  // FDBRIDGE_UNIQUE_FD_H_
