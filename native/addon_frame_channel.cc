// The FrameChannel class: native/frame_channel.h seen from JS.
#include "addon.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fd_budget.h"
#include "frame_channel.h"
#include "frame_format.h"
#include "unix_socket.h"

namespace fdbridge {

// ---------------------------------------------------------------------------
// FrameChannel: new FrameChannel(socket, { replyError, onBroken, afterReceive? })
// binds native/frame_channel.h to an open Socket. Requests return promises
// that the channel settles from the poll callback, without a JS callback per
// reply:
//   dup(tag, fds, pull) -> Promise<number | number[]>: a DUP with `fds`
//     (borrowed) beside it, or a GETFD listing them (pull); tag 0 resolves
//     with the one number, 1 and 2 with the list (1: dupFileDescriptors).
//   call(frame, operation, exempt) -> Promise<Buffer>: a CALL or RELEASE
//     frame (its id is written in), resolved with the RESULT frame.
//   failAll(errorFor): rejects every pending request with errorFor(operation).
// A reply that fails its request gets its error from replyError(operation,
// fds expected, frame); a queued request whose send meets a peer that is gone
// calls onBroken(err). Held strongly until its socket closes; then pending
// requests reject with ECANCELED (failAll is the way to fail them first).

class ChannelWrap : public Napi::ObjectWrap<ChannelWrap>, public FrameChannel::Delegate {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FrameChannel",
                       {
                           InstanceMethod<&ChannelWrap::Dup>("dup"),
                           InstanceMethod<&ChannelWrap::DupSync>("dupSync"),
                           InstanceMethod<&ChannelWrap::Call>("call"),
                           InstanceMethod<&ChannelWrap::FailAll>("failAll"),
                           InstanceAccessor<&ChannelWrap::GetPending>("pending"),
                           InstanceAccessor<&ChannelWrap::GetPendingDups>("pendingDups"),
                           InstanceMethod<&ChannelWrap::Serve>("serve"),
                           InstanceMethod<&ChannelWrap::ServePulls>("servePulls"),
                           InstanceMethod<&ChannelWrap::CloseGivenInBackground>("closeGivenInBackground"),
                           InstanceMethod<&ChannelWrap::ChargeTo>("chargeTo"),
                           InstanceMethod<&ChannelWrap::Add>("add"),
                           InstanceMethod<&ChannelWrap::Adopt>("adopt"),
                           InstanceMethod<&ChannelWrap::Release>("release"),
                           InstanceMethod<&ChannelWrap::KeepAdoptedCharged>("keepAdoptedCharged"),
                           InstanceMethod<&ChannelWrap::ForgetAdopted>("forgetAdopted"),
                           InstanceMethod<&ChannelWrap::CloseClientFds>("closeClientFds"),
                           InstanceMethod<&ChannelWrap::ReclaimClosedAdopted>("reclaimClosedAdopted"),
                           InstanceMethod<&ChannelWrap::Sweep>("sweep"),
                           InstanceAccessor<&ChannelWrap::GetGivenCount>("givenCount"),
                           InstanceAccessor<&ChannelWrap::GetHeldCount>("heldCount"),
                           InstanceAccessor<&ChannelWrap::GetServed>("served"),
                       });
  }

  explicit ChannelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ChannelWrap>(info) {
    Napi::Env env = info.Env();
    UnixSocket* core = SocketCoreOf(env, info[0]);
    if (core == nullptr) {
      if (info[0].IsObject()) ThrowSystem(env, -EBADF, "FrameChannel");
      throw Napi::TypeError::New(env, "FrameChannel(socket, callbacks): socket must be an open Socket");
    }
    if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "FrameChannel(socket, callbacks)");
    Napi::Object callbacks = info[1].As<Napi::Object>();
    Napi::Value reply_error = callbacks.Get("replyError");
    Napi::Value on_broken = callbacks.Get("onBroken");
    Napi::Value after_receive = callbacks.Get("afterReceive");
    // replyError is what settles a request its reply fails: a channel that
    // sends requests needs it (the command's side, which only serves, does not).
    if (reply_error.IsFunction()) reply_error_ = Napi::Persistent(reply_error.As<Napi::Function>());
    if (on_broken.IsFunction()) on_broken_ = Napi::Persistent(on_broken.As<Napi::Function>());
    if (after_receive.IsFunction()) after_receive_ = Napi::Persistent(after_receive.As<Napi::Function>());
    async_context_ = std::make_unique<Napi::AsyncContext>(env, "FdbridgeFrameChannel", Value());
    channel_ = std::make_unique<FrameChannel>(core, this);
    channel_->SetAfterReceiveHook(!after_receive_.IsEmpty());
    Ref();  // strong until the socket closes
  }

 private:
  // What a request is called in errors (FrameChannel::Request::tag).
  static constexpr uint8_t kDupOne = 0;
  static constexpr uint8_t kDupMany = 1;
  static constexpr uint8_t kDupFolded = 2;
  static constexpr uint8_t kCall = 3;
  static constexpr uint8_t kDupSync = 4;  // a dupSync that timed out: its late reply

  static std::string Operation(const FrameChannel::Request& r) {
    if (r.tag == kCall) return r.label;
    if (r.tag == kDupSync) return "dupFileDescriptorSync";
    return r.tag == kDupMany ? "dupFileDescriptors" : "dupFileDescriptor";
  }

  FrameChannel* Channel(Napi::Env env, const char* syscall) {
    if (!channel_->attached()) throw Napi::Error(env, SystemError(env, -EBADF, syscall));
    return channel_.get();
  }

  // Sends a request settled by a new promise. Throws, with nothing sent, as
  // UnixSocket::Send fails; the promise is made first, so that once the
  // request is sent nothing can throw.
  Napi::Value Request(Napi::Env env, FrameChannel::Kind kind, const std::vector<int>& fds, char* frame, size_t len,
                      bool exempt, bool own, uint8_t tag, std::string label) {
    FrameChannel* channel = Channel(env, "sendmsg");
    if (reply_error_.IsEmpty()) throw Napi::TypeError::New(env, "FrameChannel: a channel that sends requests needs callbacks.replyError");
    napi_deferred deferred;
    napi_value promise;
    if (napi_create_promise(env, &deferred, &promise) != napi_ok) throw Napi::Error::New(env, "FrameChannel: no promise");
    FrameChannel::Request request{0, 0, deferred, tag, std::move(label)};
    int r = channel->Send(kind, fds.data(), fds.size(), frame, len, exempt, own, std::move(request));
    if (r < 0 || r == UnixSocket::kQueueFull) {
      // Nothing was sent: settle the unused promise (nobody holds it, and a
      // rejection would be reported as unhandled), then throw.
      napi_resolve_deferred(env, deferred, env.Undefined());
      if (r < 0) ThrowSystem(env, r, "sendmsg");
      ThrowQueueFull(env, channel_->socket(), "sendmsg");
    }
    return Napi::Value(env, promise);
  }

  Napi::Value Dup(const Napi::CallbackInfo& info) {
    int tag = ArgInt(info, 0, "tag");
    if (tag != kDupOne && tag != kDupMany && tag != kDupFolded) throw Napi::RangeError::New(info.Env(), "dup: tag must be 0, 1 or 2");
    std::vector<int>& fds = scratch_fds_;
    if (tag == kDupOne && info.Length() > 1 && info[1].IsNumber()) {
      fds.assign(1, ArgFd(info, 1));  // the common request: no array to make and read
    } else {
      ArgFdList(info, 1, &fds);
    }
    if (fds.empty() || (tag == kDupOne && fds.size() != 1)) throw Napi::RangeError::New(info.Env(), "dup: wrong number of fds for its tag");
    bool pull = info.Length() > 2 && info[2].ToBoolean();
    // Folded calls send our pins of the callers' fds.
    return Request(info.Env(), pull ? FrameChannel::Kind::kGetfd : FrameChannel::Kind::kDup, fds, nullptr, 0, false,
                   tag == kDupFolded, static_cast<uint8_t>(tag), std::string());
  }

  // dupSync(fd, timeoutMs) -> number | { status, ... }: the blocking form
  // of dup(0, fd) (FrameChannel::DupSync). The far side's number, or
  // { status: 'reply', reply: Buffer, fdsClosed } for another frame
  // answering it, { status: 'timeout', late: Promise<number> } (the request
  // stays pending: `late` settles with its reply, or fails with failAll),
  // { status: 'woken', late } the same for a worker thread being terminated
  // (its terminate() woke the wait: thread_wake.h),
  // { status: 'gone', errno } (0: end of file). Throws, with nothing sent,
  // as dup does, also for its send queued behind a full buffer that failed
  // during the wait. Whatever else arrived during the wait has been handed on
  // (settled requests, the socket's message handler) when it returns.
  Napi::Value DupSync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = ArgFd(info, 0);
    double ms = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
    if (!(ms >= 0 && ms <= 2147483647.0 && ms == floor(ms))) throw Napi::RangeError::New(env, "dupSync: timeoutMs must be an integer in [0, 2^31)");
    FrameChannel* channel = Channel(env, "sendmsg");
    if (reply_error_.IsEmpty()) throw Napi::TypeError::New(env, "FrameChannel: a channel that sends requests needs callbacks.replyError");
    FrameChannel::SyncDup r = channel->DupSync(fd, static_cast<int>(ms));
    switch (r.status) {
      case FrameChannel::SyncDup::kFd:
        return Napi::Number::New(env, r.fd);
      case FrameChannel::SyncDup::kNotSent:
        ThrowSystem(env, r.err, "sendmsg");
      case FrameChannel::SyncDup::kQueueFull:
        ThrowQueueFull(env, channel_->socket(), "sendmsg");
      default:
        break;
    }
    Napi::Object o = Napi::Object::New(env);
    if (r.status == FrameChannel::SyncDup::kReply) {
      o.Set("status", "reply");
      o.Set("reply", Napi::Buffer<char>::Copy(env, r.reply.data(), r.reply.size()));
      o.Set("fdsClosed", Napi::Number::New(env, static_cast<double>(r.fds_closed)));
    } else if (r.status == FrameChannel::SyncDup::kTimeout || r.status == FrameChannel::SyncDup::kWoken) {
      // The promise is made only now, for the few calls that time out; the
      // request is pending before anything here can throw. Without one
      // (no memory) it is not kept: its late duplicate stays in the far
      // side's ledger until the connection ends.
      napi_deferred deferred;
      napi_value late;
      if (napi_create_promise(env, &deferred, &late) == napi_ok) {
        channel->KeepLate(r, FrameChannel::Request{0, 0, deferred, kDupSync, std::string()});
        o.Set("late", Napi::Value(env, late));
      }
      o.Set("status", r.status == FrameChannel::SyncDup::kTimeout ? "timeout" : "woken");
    } else {
      o.Set("status", "gone");
      o.Set("errno", Napi::Number::New(env, -r.err));
    }
    return o;
  }

  Napi::Value Call(const Napi::CallbackInfo& info) {
    const char* data;
    size_t len;
    ArgBytes(info, 0, &data, &len);
    std::string operation = ArgName(info, 1);
    bool exempt = info.Length() > 2 && info[2].ToBoolean();
    // The caller's own fresh frame: its id is written in place.
    return Request(info.Env(), FrameChannel::Kind::kFrame, {}, const_cast<char*>(data), len, exempt, false, kCall,
                   std::move(operation));
  }

  // failAll(errorFor): the one place where every pending request fails.
  Napi::Value FailAll(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "failAll(errorFor)");
    Napi::Function error_for = info[0].As<Napi::Function>();
    for (FrameChannel::Request& r : channel_->TakeAll()) {
      napi_value err;
      try {
        err = error_for.Call({Napi::String::New(env, Operation(r))});
      } catch (const Napi::Error& e) {
        err = e.Value();
      }
      napi_reject_deferred(env, static_cast<napi_deferred>(r.token), err);
    }
    return env.Undefined();
  }

  Napi::Value GetPending(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->pending()));
  }
  Napi::Value GetPendingDups(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->pending_dups()));
  }

  // The ledger's cap, argument `at` (serve, servePulls): none when not a number.
  static size_t MaxGiven(const Napi::CallbackInfo& info, size_t at, const char* usage) {
    size_t max_given = SIZE_MAX;
    if (info.Length() > at && info[at].IsNumber()) {
      double v = info[at].As<Napi::Number>().DoubleValue();
      if (!(v >= 0)) throw Napi::RangeError::New(info.Env(), usage);
      if (v < 1e15) max_given = static_cast<size_t>(v);
    }
    return max_given;
  }

  // serve(on, maxGiven?): maxGiven caps the ledger (see FrameChannel::Serve).
  Napi::Value Serve(const Napi::CallbackInfo& info) {
    size_t max_given = MaxGiven(info, 1, "serve: maxGiven must be >= 0");
    channel_->Serve(info.Length() > 0 && info[0].ToBoolean(), max_given);
    return info.Env().Undefined();
  }
  // servePulls(pidfd, maxGiven?): GETFDs answered here, pulled through
  // `pidfd` (borrowed; -1 turns it off), the ledger capped at maxGiven
  // (see FrameChannel::ServePulls).
  Napi::Value ServePulls(const Napi::CallbackInfo& info) {
    bool off = info.Length() > 0 && info[0].IsNumber() && info[0].As<Napi::Number>().DoubleValue() == -1;
    int pidfd = off ? -1 : ArgFd(info, 0);
    size_t max_given = MaxGiven(info, 1, "servePulls: maxGiven must be >= 0");
    channel_->ServePulls(pidfd, max_given);
    return info.Env().Undefined();
  }
  Napi::Value CloseGivenInBackground(const Napi::CallbackInfo& info) {
    channel_->CloseGivenInBackground(info.Length() > 0 && info[0].ToBoolean());
    return info.Env().Undefined();
  }
  // chargeTo(budget | null): see FrameChannel::ChargeTo.
  Napi::Value ChargeTo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Value arg = info.Length() > 0 ? info[0] : env.Null();
    std::shared_ptr<FdBudget> budget = FdBudgetOf(env, arg);
    if (!budget && !arg.IsNull() && !arg.IsUndefined()) throw Napi::TypeError::New(env, "chargeTo(budget): not an FdBudget");
    channel_->ChargeTo(std::move(budget));
    return env.Undefined();
  }
  Napi::Value Add(const Napi::CallbackInfo& info) {
    int fd = ArgFd(info, 0);
    ClaimFromJs(info.Env(), &fd, 1);  // the ledger's (registered) from here on
    channel_->Add(fd);
    return info.Env().Undefined();
  }
  Napi::Value Adopt(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), channel_->Adopt(ArgFd(info, 0)));
  }
  // release(fd) -> 'released' | 'dropped' | undefined (not held): see FrameChannel::Released.
  Napi::Value Release(const Napi::CallbackInfo& info) {
    switch (channel_->Release(ArgFd(info, 0))) {
      case FrameChannel::Released::kReleased:
        return Napi::String::New(info.Env(), "released");
      case FrameChannel::Released::kDropped:
        return Napi::String::New(info.Env(), "dropped");
      case FrameChannel::Released::kNotHeld:
        break;
    }
    return info.Env().Undefined();
  }
  Napi::Value KeepAdoptedCharged(const Napi::CallbackInfo& info) {
    channel_->KeepAdoptedCharged(info.Length() > 0 && info[0].ToBoolean());
    return info.Env().Undefined();
  }
  // forgetAdopted(fds) -> how many of them were adopted and charged: see FrameChannel::ForgetAdopted.
  Napi::Value ForgetAdopted(const Napi::CallbackInfo& info) {
    std::vector<int> fds = ArgFdArray(info, "forgetAdopted(fds): fds must be an array");
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->ForgetAdopted(fds.data(), fds.size())));
  }
  // closeClientFds(fds, installs?) -> ticket: see FrameChannel::CloseClientFds
  // (`installs`: ArgInstalls). A refusal throws a SystemError EBADF naming
  // the fd, or a TypeError for a number named twice (ThrowNotClients),
  // nothing handed over.
  Napi::Value CloseClientFds(const Napi::CallbackInfo& info) {
    std::vector<int> fds = ArgFdArray(info, "closeClientFds(fds): fds must be an array");
    std::vector<uint64_t> installs =
        ArgInstalls(info.Env(), info.Length() > 1 ? info[1] : info.Env().Undefined(), fds.size(),
                    "closeClientFds(fds, installs): installs must be an array as long as fds of non-negative integers or undefined");
    uint64_t ticket = 0;
    int refused = -1;
    int r = channel_->CloseClientFds(fds.data(), fds.size(), installs.empty() ? nullptr : installs.data(), &ticket, &refused);
    if (r != 0) ThrowNotClients(info.Env(), r, refused, fds);
    ClaimFromJs(info.Env(), fds.data(), fds.size());
    return Napi::Number::New(info.Env(), static_cast<double>(ticket));
  }
  // reclaimClosedAdopted() -> how many adopted fds it found closed and refunded: see FrameChannel::ReclaimClosedAdopted.
  Napi::Value ReclaimClosedAdopted(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->ReclaimClosedAdopted()));
  }
  Napi::Value Sweep(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->Sweep()));
  }
  Napi::Value GetGivenCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->given_count()));
  }
  Napi::Value GetHeldCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->held_count()));
  }
  Napi::Value GetServed(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->served()));
  }

  // The delegate callbacks run from uv_poll (or inside a JS call that closes
  // the socket): each settles in a callback scope, so that the promise's
  // reactions (microtasks) run before we return to the loop, as after any
  // event. No C++ exception may escape them.

  class Scope {
   public:
    explicit Scope(ChannelWrap* w) : env_(w->Env()), handles_(w->Env()) {
      ok_ = napi_open_callback_scope(env_, w->Value(), *w->async_context_, &scope_) == napi_ok;
    }
    ~Scope() {
      if (ok_) napi_close_callback_scope(env_, scope_);
    }
    bool ok() const { return ok_; }

   private:
    napi_env env_;
    Napi::HandleScope handles_;
    napi_callback_scope scope_;
    bool ok_;
  };

  // No CanCallIntoJs() preflight for a settlement: nothing is owned by a
  // reply (it carries numbers, not fds), and once the environment cannot run
  // JS napi_resolve_deferred simply fails and nobody awaits the promise.
  void OnFds(FrameChannel::Request& r, const char* data) override {
    Napi::Env env = Env();
    Scope scope(this);
    if (!scope.ok()) return;
    napi_value result;
    if (r.tag == kDupOne || r.tag == kDupSync) {
      napi_create_int32(env, frame::FdAt(data, 0), &result);
    } else {
      if (r.fds > frame::kMaxFdsPerFrame) return;  // never: a DUP_OK's count is checked against the request's
      int numbers[frame::kMaxFdsPerFrame];
      for (uint32_t i = 0; i < r.fds; i++) numbers[i] = frame::FdAt(data, i);
      if (!IntArrayValue(env, numbers, r.fds, &result)) return;
    }
    napi_resolve_deferred(env, static_cast<napi_deferred>(r.token), result);
  }

  void OnResult(FrameChannel::Request& r, const char* data, size_t len) override {
    Napi::Env env = Env();
    Scope scope(this);
    if (!scope.ok()) return;
    napi_value buf;
    if (napi_create_buffer_copy(env, len, data, nullptr, &buf) != napi_ok) return;
    napi_resolve_deferred(env, static_cast<napi_deferred>(r.token), buf);
  }

  void OnFailedReply(FrameChannel::Request& r, const char* data, size_t len) override {
    Napi::Env env = Env();
    if (reply_error_.IsEmpty() || !CanCallIntoJs(*this)) return;
    Scope scope(this);
    if (!scope.ok()) return;
    napi_value err;
    try {
      err = reply_error_.Call({Napi::String::New(env, Operation(r)), Napi::Number::New(env, r.fds),
                               Napi::Buffer<char>::Copy(env, data, len)});
    } catch (const Napi::Error& e) {
      err = e.Value();
    }
    napi_reject_deferred(env, static_cast<napi_deferred>(r.token), err);
  }

  void OnSendFailed(FrameChannel::Request& r, int err) override {
    Napi::Env env = Env();
    if (!CanCallIntoJs(*this)) return;
    Scope scope(this);
    if (!scope.ok()) return;
    napi_value error;
    try {
      error = SystemError(env, err, "sendmsg");
    } catch (const Napi::Error& e) {
      error = e.Value();
    }
    napi_reject_deferred(env, static_cast<napi_deferred>(r.token), error);
  }

  void OnBroken(int err) override { Emit(on_broken_, err); }

  void AfterReceive() override { Emit(after_receive_, 0); }

  // Calls `fn` (with a SystemError for `err` < 0) as an event callback.
  void Emit(Napi::FunctionReference& fn, int err) {
    Napi::Env env = Env();
    if (fn.IsEmpty() || !CanCallIntoJs(*this)) return;
    Napi::HandleScope handles(env);
    napi_value arg = env.Undefined();
    if (err < 0) {
      try {
        arg = SystemError(env, err, "sendmsg");
      } catch (const Napi::Error& e) {
        arg = e.Value();
      }
    }
    napi_value result;
    if (napi_make_callback(env, *async_context_, Value(), fn.Value(), 1, &arg, &result) != napi_ok) {
      RaisePendingException(env);
    }
  }

  void OnDetached() override {
    bool js = CanCallIntoJs(*this);
    std::vector<FrameChannel::Request> left = channel_->TakeAll();
    if (js) {
      // Requests still waiting for a reply that can no longer come (the
      // protocol layer fails them itself before closing: a safety net).
      Napi::Env env = Env();
      Napi::HandleScope handles(env);
      for (FrameChannel::Request& r : left) {
        napi_value err;
        try {
          err = SystemError(env, -ECANCELED, "recvmsg");
        } catch (const Napi::Error& e) {
          err = e.Value();
        }
        napi_reject_deferred(env, static_cast<napi_deferred>(r.token), err);
      }
      // Nothing more will come: break the cycle through the callbacks'
      // closures, and let the object be collected.
      reply_error_.Reset();
      on_broken_.Reset();
      after_receive_.Reset();
      Unref();
    }
  }

  std::unique_ptr<FrameChannel> channel_;
  std::vector<int> scratch_fds_;
  Napi::FunctionReference reply_error_;
  Napi::FunctionReference on_broken_;
  Napi::FunctionReference after_receive_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
};

void ExportFrameChannel(Napi::Env env, Napi::Object exports) {
  exports.Set("FrameChannel", ChannelWrap::Define(env));
}

}  // namespace fdbridge
