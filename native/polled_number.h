// A uv_poll_t's hold of its fd number, for everything of fdbridge's that
// polls an fd (UnixSocket, FdWatch, RelayPump), and the way such a poll lets
// go of a number whose fd was closed behind its back.
//
// libuv knows a poll by its number alone. While one is started it holds
// loop->watchers[fd], and uv_poll_init of any other handle at that number
// fails with EEXIST (uv__fd_exists); and a poll's stop, or its uv_close,
// deletes the number's epoll entry (uv__poll_stop calls
// uv__platform_invalidate_fd, an EPOLL_CTL_DEL on the fd), whatever file the
// number holds by then. So when the program closes an fd fdbridge polls and
// another file takes its number, the old poll must let go of the number
// before a new poll is made there (or the new one fails with EEXIST), and
// its later stop or close must not reach epoll (or it deletes the new one's
// entry, which then never wakes).
//
// Each poll is found by its number among the polls of its thread (a poll
// lives on the thread of its loop: made, started and closed there): a new
// one made at the number asks the one there to yield first (its owner's
// `on_taken`, told the new file), and an owner that finds its fd gone lets
// go (LetGo).
#ifndef FDBRIDGE_POLLED_NUMBER_H_
#define FDBRIDGE_POLLED_NUMBER_H_

#include <uv.h>

#include "fd_ops.h"
#include "unique_fd.h"

namespace fdbridge {

class PolledNumber {
 public:
  // Called on the poll at a number when a new one is about to be made
  // there on the same loop, with the file at the number now (`known` false
  // when it could not be read). The owner lets go (LetGo) unless its fd is
  // still there (that file, and for an fd of ours its registration): then
  // the new poll's uv_poll_init meets this one's and fails with EEXIST, as
  // two polls of one fd do.
  using TakenFn = void (*)(void* owner, const FdIdentity& file, bool known);

  PolledNumber(uv_poll_t* poll, TakenFn on_taken, void* owner) : poll_(poll), on_taken_(on_taken), owner_(owner) {}
  ~PolledNumber() { Forget(); }
  PolledNumber(const PolledNumber&) = delete;
  PolledNumber& operator=(const PolledNumber&) = delete;

  // Reads the file at `fd` (its identity, kept: file(); FdFileIdentity, a
  // statx that asks no filesystem, so that neither this nor Holds blocks the
  // loop on a hung network or FUSE filesystem), asks the poll of this
  // thread at `fd` on `loop`, if any, to yield, reads the fd's registration
  // (registration()), then uv_poll_init. On success this poll is the one
  // found at `fd`; returns uv_poll_init's result.
  int Init(uv_loop_t* loop, int fd);

  // No longer found at its number: before the owner closes the poll.
  void Forget();

  // The owner's fd at the number was closed behind its back (another file
  // there now, or none): ends the registration Init read there
  // (registration()) as closed by someone else (FdStillHeldLooked with
  // same_file false: FdClosedByOther, noted for a watching leak check;
  // nothing when it was not fdbridge's, or a new fd of fdbridge's at the
  // number ended it already), then stops the poll if it
  // is started and makes libuv forget its number (its io_watcher's fd is
  // -1 from here on), so that no later uv_poll_stop or uv_close of it
  // reaches epoll; and this poll is no longer found at the number. The
  // owner never starts the poll again, nor reads, writes or closes the
  // number. Idempotent.
  void LetGo();
  // on_taken for an owner that holds its fd in `fd` and gives it up when it
  // lets go: unless `fd` is empty, the poll let go of already, or `file` is
  // still the one Init read and the number still has the registration Init
  // read (one registry read; for an fd of ours only), LetGo and `fd`
  // released unclosed (another file's number now, none, or a new fd of
  // ours, of the same file or not). Whether it let go now.
  bool YieldTo(const FdIdentity& file, bool known, UniqueFd* fd);
  // Before such an owner closes the poll and `fd`: forgets the number and,
  // when `fd` no longer holds the file Init read, or a new fd of ours holds
  // the number (closed behind the owner's back, and no poll made there since
  // to tell it), LetGo and `fd` released, so that neither the poll's close (its EPOLL_CTL_DEL) nor the
  // fd's reaches the file there now.
  void LetGoIfGone(UniqueFd* fd);
  bool let_go() const { return let_go_; }

  // The file at the number when Init read it (known() false: unread).
  const FdIdentity& file() const { return file_; }
  bool known() const { return known_; }
  // The fd's registration when Init read it (0: not fdbridge's own): LetGo
  // ends it.
  uint64_t registration() const { return registration_; }
  // No other fd of fdbridge's has been registered at the number since Init
  // (always, for a number that was not fdbridge's): an fd of ours there is this one.
  bool StillRegistered() const;
  // Whether `file` (known) is the one Init read.
  bool Same(const FdIdentity& file, bool known) const {
    return known && known_ && SameFile(file, file_);
  }
  // Whether `fd` (the owner's number) holds the file Init read (one
  // FdFileIdentity, as Init reads it), for the rare paths (a close); true
  // when nothing was read then.
  bool Holds(int fd) const;
  // Whether Init succeeded: the poll handle is initialized (its owner closes it).
  bool initialized() const { return number_ >= 0; }

 private:
  uv_poll_t* poll_;
  TakenFn on_taken_;
  void* owner_;
  int number_ = -1;  // the fd Init polled
  int fd_ = -1;  // while found at it
  bool let_go_ = false;
  FdIdentity file_{};
  bool known_ = false;
  uint64_t registration_ = 0;
};

}  // namespace fdbridge

#endif  // FDBRIDGE_POLLED_NUMBER_H_
