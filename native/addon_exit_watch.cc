// The ExitWatch class: native/fd_watch.h seen from JS.
#include "addon.h"

#include <memory>

#include "fd_watch.h"

namespace fdbridge {

// ---------------------------------------------------------------------------
// ExitWatch: new ExitWatch(pidfd, onExit) calls onExit() once, when the
// pidfd becomes readable (its process exited); close() stops it. The watch
// holds its own duplicate of the pidfd. Held strongly until close(), like a
// socket.

class ExitWatchWrap : public Napi::ObjectWrap<ExitWatchWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ExitWatch",
                       {InstanceMethod<&ExitWatchWrap::CloseMethod>("close"),
                        InstanceMethod<&ExitWatchWrap::RefMethod>("ref"),
                        InstanceMethod<&ExitWatchWrap::UnrefMethod>("unref")});
  }

  explicit ExitWatchWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ExitWatchWrap>(info) {
    Napi::Env env = info.Env();
    int fd = ArgFd(info, 0);
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "ExitWatch(pidfd, onExit)");
    on_exit_ = Napi::Persistent(info[1].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) throw Napi::Error::New(env, "ExitWatch: no event loop");
    int err = 0;
    core_ = FdWatch::Create(loop, fd, OnReady, this, &err);
    if (core_ == nullptr) ThrowSystem(env, err, "poll(pidfd)");
    async_context_ = std::make_unique<Napi::AsyncContext>(env, "FdbridgeExitWatch", Value());
    Data(env)->watches.insert(this);
    Ref();  // strong until close()
  }

  ~ExitWatchWrap() override {
    if (core_ != nullptr) Detach(nullptr, nullptr);
  }

  void Detach(void (*on_freed)(void*), void* arg) {
    if (core_ == nullptr) return;
    FdWatch* core = core_;
    core_ = nullptr;
    InstanceData* data = Data(Env());
    if (data != nullptr) data->watches.erase(this);
    core->Close(on_freed, arg);
  }

 private:
  static void OnReady(void* arg) {
    ExitWatchWrap* self = static_cast<ExitWatchWrap*>(arg);
    Napi::Env env = self->Env();
    if (self->on_exit_.IsEmpty()) return;
    Napi::HandleScope scope(env);
    napi_value result;
    napi_status status = napi_make_callback(env, *self->async_context_, self->Value(), self->on_exit_.Value(), 0,
                                            nullptr, &result);
    if (status != napi_ok) RaisePendingException(env);
  }

  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    Detach(nullptr, nullptr);
    if (!released_) {
      released_ = true;
      on_exit_.Reset();
      Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Value RefMethod(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->Ref();
    return info.Env().Undefined();
  }

  Napi::Value UnrefMethod(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->Unref();
    return info.Env().Undefined();
  }

  FdWatch* core_ = nullptr;
  bool released_ = false;
  Napi::FunctionReference on_exit_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
};

void DetachExitWatch(ExitWatchWrap* w, void (*on_freed)(void*), void* arg) { w->Detach(on_freed, arg); }

void ExportExitWatch(Napi::Env env, Napi::Object exports) {
  exports.Set("ExitWatch", ExitWatchWrap::Define(env));
}

}  // namespace fdbridge
