#include "message_batch.h"

#include <errno.h>
#include <string.h>

#include "addon.h"
#include "fd_ops.h"
#include "unique_fd.h"

namespace fdbridge {

MessageBatch* MessageBatch::Create(napi_env env, uv_loop_t* loop, napi_value dispatcher, int* err) {
  MessageBatch* b = new MessageBatch(env, loop);
  // uv_check_init and uv_idle_init cannot fail; from here on the handles
  // are closed through the loop (Close).
  uv_check_init(loop, &b->check_);
  uv_idle_init(loop, &b->idle_);
  b->check_.data = b;
  b->idle_.data = b;
  napi_value resource, name;
  if (napi_create_object(env, &resource) != napi_ok || napi_create_reference(env, resource, 1, &b->resource_) != napi_ok ||
      napi_create_string_utf8(env, "FdbridgeMessageBatch", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, resource, name, &b->async_context_) != napi_ok) {
    b->Close(nullptr, nullptr);
    *err = -ENOMEM;
    return nullptr;
  }
  b->SetDispatcher(dispatcher);
  return b;
}

MessageBatch::MessageBatch(napi_env env, uv_loop_t* loop) : env_(env) {
}

MessageBatch::~MessageBatch() {
  if (async_context_ != nullptr) napi_async_destroy(env_, async_context_);
  for (napi_ref* ref : {&dispatcher_, &resource_, &data_ab_, &meta_ab_}) {
    if (*ref != nullptr) napi_delete_reference(env_, *ref);
  }
}

void MessageBatch::SetDispatcher(napi_value dispatcher) {
  if (dispatcher_ != nullptr) napi_delete_reference(env_, dispatcher_);
  dispatcher_ = nullptr;
  napi_create_reference(env_, dispatcher, 1, &dispatcher_);
}

void MessageBatch::Add(Target* target, const char* data, size_t len, const int* fds, size_t nfds, ScmDiscard discard,
                       bool keep_for_js, std::shared_ptr<FdBudget> budget) {
  if (closed_) {
    // Nobody will flush: closed now, as the flush that cannot reach JS would.
    fds_.assign(fds, fds + nfds);
    Discard(Entry{target, 0, 0, 0, nfds, discard, false, nullptr});
    fds_.clear();
    return;
  }
  // Owned from here on: a failed allocation below must not lose them.
  UniqueFds owned(fds, nfds);
  Entry e{target, data_.size(), len, fds_.size(), nfds, discard, keep_for_js, nfds > 0 ? std::move(budget) : nullptr};
  data_.insert(data_.end(), data, data + len);
  fds_.insert(fds_.end(), fds, fds + nfds);
  entries_.push_back(std::move(e));
  owned.release();
  // Counted once the entry holds them (an allocation above may throw).
  if (entries_.back().budget != nullptr) entries_.back().budget->HoldUnsettled(nfds);
  count_++;
  target->batched_turn_ = turn_;
  Arm();
}

void MessageBatch::Forget(Target* target) {
  if (!Holds(target)) return;
  for (Entry& e : entries_) {
    if (e.target != target) continue;
    Discard(e);
    Settle(e);
    e.target = nullptr;
    e.nfds = 0;
  }
  target->batched_turn_ = 0;
}

void MessageBatch::Discard(const Entry& e) {
  if (e.nfds == 0) return;
  const int* fds = fds_.data() + e.fd_at;
  if (e.discard.in_background) {
    FdCloseInBackground(fds, e.nfds, e.discard.owner, /*held_for_peer=*/true);
  } else {
    UniqueFds(fds, e.nfds).reset();
  }
}

void MessageBatch::DiscardAll() {
  for (const Entry& e : entries_) Discard(e);
  Clear();
}

void MessageBatch::Settle(Entry& e) {
  if (e.budget != nullptr) e.budget->ReleaseUnsettled(e.nfds);
  e.budget = nullptr;
}

void MessageBatch::Clear() {
  for (Entry& e : entries_) Settle(e);
  entries_.clear();
  data_.clear();
  fds_.clear();
  count_ = 0;
  turn_++;
}

bool MessageBatch::Arm() {
  if (armed_ || closed_) return armed_;
  armed_ = true;
  uv_check_start(&check_, OnCheck);
  uv_idle_start(&idle_, OnIdle);
  return true;
}

void MessageBatch::Disarm() {
  if (!armed_) return;
  armed_ = false;
  uv_check_stop(&check_);
  uv_idle_stop(&idle_);
}

bool MessageBatch::CanCallIntoJs() {
  Napi::HandleScope scope(env_);  // outside any JS frame
  napi_value self = nullptr;
  return napi_get_reference_value(env_, resource_, &self) == napi_ok && fdbridge::CanCallIntoJs(env_, self);
}

void MessageBatch::OnCheck(uv_check_t* handle) {
  MessageBatch* self = static_cast<MessageBatch*>(handle->data);
  self->Flush();
  if (self->count_ == 0) self->Disarm();
}

namespace {

// An ArrayBuffer of at least `bytes`, reused while it is large enough.
bool Storage(napi_env env, napi_ref* ref, size_t* cap, size_t bytes, napi_value* out, void** data) {
  if (*ref != nullptr && *cap >= bytes) {
    if (napi_get_reference_value(env, *ref, out) != napi_ok || *out == nullptr) return false;
    size_t len;
    return napi_get_arraybuffer_info(env, *out, data, &len) == napi_ok;
  }
  size_t want = *cap == 0 ? 64 * 1024 : *cap;
  while (want < bytes) want *= 2;
  if (napi_create_arraybuffer(env, want, data, out) != napi_ok) return false;
  if (*ref != nullptr) napi_delete_reference(env, *ref);
  *ref = nullptr;
  *cap = 0;
  if (napi_create_reference(env, *out, 1, ref) != napi_ok) return false;
  *cap = want;
  return true;
}

}  // namespace

void MessageBatch::Flush() {
  if (count_ == 0 || flushing_ || closed_) return;
  if (dispatcher_ == nullptr || !CanCallIntoJs()) {
    // Nobody left to hand them to (the environment is ending).
    DiscardAll();
    return;
  }
  napi_handle_scope scope;
  if (napi_open_handle_scope(env_, &scope) != napi_ok) {
    DiscardAll();
    return;
  }
  size_t live = 0;
  size_t meta_len = 0;
  for (const Entry& e : entries_) {
    if (e.target == nullptr) continue;
    live++;
    meta_len += 3 + e.nfds;
  }
  napi_value fn, recv, handlers, data_ab, meta_ab, count;
  void* data_mem = nullptr;
  void* meta_mem = nullptr;
  bool ok = live > 0 && napi_get_reference_value(env_, dispatcher_, &fn) == napi_ok &&
            napi_get_reference_value(env_, resource_, &recv) == napi_ok &&
            napi_create_array_with_length(env_, live, &handlers) == napi_ok &&
            napi_create_uint32(env_, static_cast<uint32_t>(live), &count) == napi_ok &&
            Storage(env_, &data_ab_, &data_cap_, data_.size(), &data_ab, &data_mem) &&
            Storage(env_, &meta_ab_, &meta_cap_, meta_len * sizeof(double), &meta_ab, &meta_mem);
  if (ok) {
    memcpy(data_mem, data_.data(), data_.size());
    double* meta = static_cast<double*>(meta_mem);
    uint32_t i = 0;
    for (const Entry& e : entries_) {
      if (e.target == nullptr) continue;
      napi_value handler = e.target->BatchHandler();
      if (handler == nullptr || napi_set_element(env_, handlers, i++, handler) != napi_ok) {
        ok = false;
        break;
      }
      *meta++ = static_cast<double>(e.offset);
      *meta++ = static_cast<double>(e.len);
      *meta++ = static_cast<double>(e.nfds);
      for (size_t k = 0; k < e.nfds; k++) *meta++ = fds_[e.fd_at + k];
    }
  }
  if (!ok) {
    DiscardAll();
    napi_close_handle_scope(env_, scope);
    return;
  }
  // The fds are JS's from here on; messages taken during the call wait for
  // the next flush.
  for (const Entry& e : entries_) {
    if (e.target != nullptr && e.keep_for_js) KeepForJs(Napi::Env(env_), fds_.data() + e.fd_at, e.nfds);
  }
  Clear();
  flushing_ = true;
  napi_value args[4] = {count, handlers, data_ab, meta_ab};
  napi_value result;
  if (napi_make_callback(env_, async_context_, recv, fn, 4, args, &result) != napi_ok) RaisePendingException(env_);
  flushing_ = false;
  napi_close_handle_scope(env_, scope);
}

void MessageBatch::Close(void (*on_freed)(void*), void* arg) {
  if (closed_) return;
  DiscardAll();
  Disarm();
  closed_ = true;
  on_freed_ = on_freed;
  freed_arg_ = arg;
  pending_closes_ = 2;
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), OnClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), OnClosed);
}

void MessageBatch::OnClosed(uv_handle_t* handle) {
  MessageBatch* self = static_cast<MessageBatch*>(handle->data);
  if (--self->pending_closes_ > 0) return;
  void (*cb)(void*) = self->on_freed_;
  void* arg = self->freed_arg_;
  delete self;
  if (cb != nullptr) cb(arg);
}

}  // namespace fdbridge
