// One fd watched once for readability on the event loop: a pidfd becomes
// readable when its process exits (pidfd_open(2), "poll"), which is how a
// peer that sends no end of file (a datagram peer) is seen to die. Uses
// libuv but no Node-API.
#ifndef FDBRIDGE_FD_WATCH_H_
#define FDBRIDGE_FD_WATCH_H_

#include <uv.h>

#include "fd_ops.h"
#include "polled_number.h"
#include "unique_fd.h"

namespace fdbridge {

class FdWatch {
 public:
  // Watches a close-on-exec duplicate of `fd` (the caller keeps its own):
  // `on_ready(arg)` runs once, the first time it is readable. Returns
  // nullptr and sets *err (-errno) on failure, with nothing left open.
  static FdWatch* Create(uv_loop_t* loop, int fd, void (*on_ready)(void*), void* arg, int* err);

  // Stops watching and closes the duplicate (unless it was closed behind
  // our back: another file at its number is left alone); the object deletes itself
  // once libuv has closed the poll handle, then `on_freed(arg)` runs.
  // Idempotent.
  void Close(void (*on_freed)(void*) = nullptr, void* arg = nullptr);
  void Ref();
  void Unref();

 private:
  FdWatch() = default;
  ~FdWatch() = default;
  FdWatch(const FdWatch&) = delete;
  FdWatch& operator=(const FdWatch&) = delete;
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnClosed(uv_handle_t* handle);
  // PolledNumber's on_taken: a poll is about to be made at our copy's
  // number (its file closed behind our back, another file there now?).
  static void OnNumberTaken(void* owner, const FdIdentity& file, bool known);

  uv_poll_t poll_;
  PolledNumber polled_{&poll_, &FdWatch::OnNumberTaken, this};
  UniqueFd fd_;  // empty once let go of
  bool closed_ = false;
  bool fired_ = false;
  void (*on_ready_)(void*) = nullptr;
  void* ready_arg_ = nullptr;
  void (*on_freed_)(void*) = nullptr;
  void* freed_arg_ = nullptr;
};

}  // namespace fdbridge

#endif  // FDBRIDGE_FD_WATCH_H_
