#include "fd_watch.h"

#include <utility>

#include "fd_ops.h"

namespace fdbridge {

FdWatch* FdWatch::Create(uv_loop_t* loop, int fd, void (*on_ready)(void*), void* arg, int* err) {
  int dup = FdDupHigh(fd);  // ours: numbered where a caller's stale fd cannot be
  if (dup < 0) {
    *err = dup;
    return nullptr;
  }
  UniqueFd own(dup);
  FdWatch* w = new FdWatch();
  // A poll of this thread's at the number whose fd was closed behind its
  // back lets go of it first (PolledNumber); our copy's file is kept.
  int r = w->polled_.Init(loop, own.get());
  if (r != 0) {
    // Not initialized (libuv checks the fd first): nothing to close but ours.
    delete w;
    *err = r;
    return nullptr;
  }
  w->poll_.data = w;
  w->fd_ = std::move(own);
  w->on_ready_ = on_ready;
  w->ready_arg_ = arg;
  r = uv_poll_start(&w->poll_, UV_READABLE, OnPoll);
  if (r != 0) {
    *err = r;
    w->Close();  // frees itself once libuv has closed the handle
    return nullptr;
  }
  *err = 0;
  return w;
}

void FdWatch::OnPoll(uv_poll_t* handle, int status, int events) {
  FdWatch* self = static_cast<FdWatch*>(handle->data);
  if (self->closed_ || self->fired_ || self->polled_.let_go()) return;
  self->fired_ = true;
  uv_poll_stop(&self->poll_);
  self->on_ready_(self->ready_arg_);
}

void FdWatch::OnNumberTaken(void* owner, const FdIdentity& file, bool known) {
  FdWatch* self = static_cast<FdWatch*>(owner);
  // Closed behind our back unless still our copy's file (then a second poll
  // of it: EEXIST for that one): its registration ends (FdClosedByOther,
  // for a watching leak check), and the number is left to the new file.
  if (!self->closed_) self->polled_.YieldTo(file, known, &self->fd_);
}

void FdWatch::Ref() {
  if (!closed_) uv_ref(reinterpret_cast<uv_handle_t*>(&poll_));
}

void FdWatch::Unref() {
  if (!closed_) uv_unref(reinterpret_cast<uv_handle_t*>(&poll_));
}

void FdWatch::Close(void (*on_freed)(void*), void* arg) {
  if (closed_) return;
  closed_ = true;
  on_freed_ = on_freed;
  freed_arg_ = arg;
  // Closed behind our back (another file at the number, or none, and no
  // poll made there to tell us)? Then the number is let go of before the
  // poll's close, which would otherwise delete the number's epoll entry,
  // and it is not closed.
  polled_.LetGoIfGone(&fd_);
  // uv_close takes the fd out of epoll at once, so closing it next is safe.
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnClosed);
  fd_.reset();
}

void FdWatch::OnClosed(uv_handle_t* handle) {
  FdWatch* self = static_cast<FdWatch*>(handle->data);
  void (*cb)(void*) = self->on_freed_;
  void* arg = self->freed_arg_;
  delete self;
  if (cb != nullptr) cb(arg);
}

}  // namespace fdbridge
