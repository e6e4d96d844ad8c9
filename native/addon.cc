// Node-API exports and the per-environment cleanup hook; nothing else. All the
// POSIX work lives in fd_ops, sock_ops, scm_rights, unix_socket and (the wire
// protocol) frame_format and frame_channel.
//
// Errors: failures are turned into JS errors by a factory that src/native.ts
// registers with init(), so every error the addon raises is already one of the
// typed fdbridge errors: makeError(kind, errno, syscall, details).
#include <napi.h>
#include <uv.h>

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <sys/resource.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "child_reaper.h"
#include "fd_ops.h"
#include "fd_watch.h"
#include "frame_channel.h"
#include "frame_format.h"
#include "loop_fds.h"
#include "relay_pump.h"
#include "scm_rights.h"
#include "sock_ops.h"
#include "unique_fd.h"
#include "unix_socket.h"

namespace fdbridge {
namespace {

// A non-negative integer that a double holds exactly, or -1.
double WholeNumber(const Napi::Value& v) {
  if (!v.IsNumber()) return -1;
  double d = v.As<Napi::Number>().DoubleValue();
  return d == floor(d) && d >= 0 && d <= 9007199254740991.0 ? d : -1;
}

// Reads closeInBackground's fds argument: non-negative integers.
std::vector<int> ArgFdArray(const Napi::CallbackInfo& info, const char* usage) {
  std::vector<int> fds;
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(info.Env(), usage);
  Napi::Array arr = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    double d = WholeNumber(arr.Get(i));
    if (d < 0 || d > 2147483647.0) throw Napi::TypeError::New(info.Env(), "each fd must be a non-negative integer");
    fds.push_back(static_cast<int>(d));
  }
  return fds;
}

class SocketWrap;
class ExitWatchWrap;
class RelayPumpWrap;

struct InstanceData {
  // The loop's own fds registered by ownLoopFds: they leave the registry as
  // the environment goes, just before libuv closes them (uv_loop_close runs
  // after every environment cleanup), so that a number they free is never
  // refused, and is not handed to anyone while they still hold it.
  std::vector<int> loop_fds;
  // What this environment's fds are held for (fd_ops.h, FdSetThreadHolder).
  uint64_t holder = 0;
  // Child processes this environment's connections started and Node has not
  // reaped yet (watchChild): watch id -> a pidfd of ours.
  std::unordered_map<uint32_t, int> children;
  uint32_t next_child = 0;

  // The environment's end (a worker thread's exit or termination, the
  // process's exit), after Node has closed every handle and our cleanup hook
  // every socket, watch and pump: whatever its JavaScript still held is
  // closed now, as it never will be otherwise (the threads share the fd
  // table; the duplicates a command here was given and did not adopt, pins,
  // fds that arrived and were never claimed), once the child processes it
  // started have exited and been reaped (a pidfd command may pull pins by
  // number until it exits).
  ~InstanceData() {
    for (int fd : loop_fds) FdDisown(fd);
    std::vector<int> held;
    FdReleaseHolder(holder, &held);
    std::vector<int> pidfds;
    for (const auto& child : children) pidfds.push_back(child.second);
    ReapThenClose(std::move(pidfds), std::move(held), kReapGraceMs);
  }
  Napi::FunctionReference make_error;
  Napi::FunctionReference socket_ctor;
  std::unordered_set<SocketWrap*> sockets;
  std::unordered_set<ExitWatchWrap*> watches;
  std::unordered_set<RelayPumpWrap*> pumps;
  napi_async_cleanup_hook_handle cleanup_handle = nullptr;
  size_t closing = 0;
};

// Socket objects constructed and not yet destroyed (garbage collected), in
// every environment of the process: one that stays counted after close() is
// memory nobody can free. Process-wide because a destructor may run after
// its environment's instance data is gone.
std::atomic<size_t> g_sockets_alive{0};

InstanceData* Data(Napi::Env env) { return env.GetInstanceData<InstanceData>(); }

// kind: "system" (errno/syscall), "eof", "truncated".
Napi::Value MakeError(Napi::Env env, const char* kind, int neg_errno, const char* syscall,
                      Napi::Object details) {
  InstanceData* data = Data(env);
  if (data != nullptr && !data->make_error.IsEmpty()) {
    return data->make_error.Call({Napi::String::New(env, kind), Napi::Number::New(env, neg_errno),
                                  Napi::String::New(env, syscall), details});
  }
  // init() was not called: still give a usable error.
  std::string msg = std::string(syscall) + " failed: " + (neg_errno < 0 ? strerror(-neg_errno) : kind);
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, neg_errno));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e.Value();
}

Napi::Value SystemError(Napi::Env env, int neg_errno, const char* syscall) {
  return MakeError(env, "system", neg_errno, syscall, Napi::Object::New(env));
}

[[noreturn]] void ThrowSystem(Napi::Env env, int neg_errno, const char* syscall) {
  throw Napi::Error(env, SystemError(env, neg_errno, syscall));
}

int CheckFdResult(Napi::Env env, int r, const char* syscall) {
  if (r < 0) ThrowSystem(env, r, syscall);
  return r;
}

int ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v == floor(v)) || v < -2147483648.0 || v > 2147483647.0) {
    throw Napi::RangeError::New(info.Env(), std::string(what) + " must be a 32-bit integer");
  }
  return static_cast<int>(v);
}

int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  int fd = ArgInt(info, i, "fd");
  if (fd < 0) throw Napi::RangeError::New(info.Env(), "fd must be >= 0");
  return fd;
}

int ArgSockType(const Napi::CallbackInfo& info, size_t i) {
  int t = ArgInt(info, i, "type");
  if (t != SOCK_STREAM && t != SOCK_DGRAM && t != SOCK_SEQPACKET) {
    throw Napi::RangeError::New(info.Env(), "type must be SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET");
  }
  return t;
}

// Reads an array of fds (numbers) into `out`, validating shape only; the
// kernel (or dup) validates that each one is open.
void ArgFdList(const Napi::CallbackInfo& info, size_t i, std::vector<int>* out) {
  out->clear();
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) return;
  if (!info[i].IsArray()) throw Napi::TypeError::New(info.Env(), "fds must be an array of numbers");
  Napi::Array arr = info[i].As<Napi::Array>();
  uint32_t n = arr.Length();
  if (n > kMaxFdsPerMessage) {
    throw Napi::RangeError::New(info.Env(), "at most 253 fds (SCM_MAX_FD) fit in one message");
  }
  out->reserve(n);
  for (uint32_t k = 0; k < n; k++) {
    Napi::Value v = arr.Get(k);
    if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), "fds must be an array of numbers");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d == floor(d)) || d < -1 || d > 2147483647.0) {
      throw Napi::RangeError::New(info.Env(), "each fd must be an integer");
    }
    out->push_back(static_cast<int>(d));
  }
}

void ArgBytes(const Napi::CallbackInfo& info, size_t i, const char** data, size_t* len) {
  if (i >= info.Length() || !info[i].IsTypedArray()) {
    throw Napi::TypeError::New(info.Env(), "data must be a Uint8Array or Buffer");
  }
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), "data must be a Uint8Array or Buffer");
  }
  Napi::Uint8Array u8 = ta.As<Napi::Uint8Array>();
  *data = reinterpret_cast<const char*>(u8.Data());
  *len = u8.ByteLength();
}

std::string ArgName(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsString()) {
    throw Napi::TypeError::New(info.Env(), "name must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Array FdArray(Napi::Env env, const int* fds, size_t n) {
  Napi::Array arr = Napi::Array::New(env, n);
  for (size_t i = 0; i < n; i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  return arr;
}

Napi::Value ReceiveError(Napi::Env env, const RecvResult& r, const char* syscall, const char* data = nullptr,
                         size_t len = 0) {
  Napi::Object details = Napi::Object::New(env);
  if (data != nullptr) details.Set("data", Napi::Buffer<char>::Copy(env, data, len));
  switch (r.status) {
    case RecvStatus::kEof:
      return MakeError(env, "eof", 0, syscall, details);
    case RecvStatus::kCtrunc:
    case RecvStatus::kTrunc:
      details.Set("what", Napi::String::New(env, r.status == RecvStatus::kCtrunc ? "control" : "data"));
      details.Set("fdsClosed", Napi::Number::New(env, static_cast<double>(r.fds_closed)));
      details.Set("bytes", Napi::Number::New(env, static_cast<double>(r.bytes)));
      return MakeError(env, "truncated", 0, syscall, details);
    default:
      return SystemError(env, r.err, syscall);
  }
}

// FdBudget: new FdBudget(limit, parent?) counts the fds that frame channels
// charged to it hold in their ledgers (channel.chargeTo(budget)), against
// `limit` and every parent's limit (see fd_budget.h). `held` and `limit`
// (settable) are readable; it lives while a socket or a child budget uses it.

// Tags FdBudget objects so that chargeTo never unwraps something else.
const napi_type_tag kFdBudgetTag = {0x6664627564676574ULL, 0x66646272696467ULL};

class FdBudgetWrap : public Napi::ObjectWrap<FdBudgetWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdBudget",
                       {InstanceAccessor<&FdBudgetWrap::GetHeld>("held"),
                        InstanceAccessor<&FdBudgetWrap::GetLimit, &FdBudgetWrap::SetLimit>("limit")});
  }

  explicit FdBudgetWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdBudgetWrap>(info) {
    Napi::Env env = info.Env();
    size_t limit = ArgLimit(env, info.Length() > 0 ? info[0] : env.Undefined());
    std::shared_ptr<FdBudget> parent;
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      parent = From(env, info[1]);
      if (!parent) throw Napi::TypeError::New(env, "FdBudget(limit, parent?): parent must be an FdBudget");
    }
    budget_ = std::make_shared<FdBudget>(limit, std::move(parent));
    info.This().As<Napi::Object>().TypeTag(&kFdBudgetTag);
  }

  // The budget behind a JS FdBudget, or null for anything else.
  static std::shared_ptr<FdBudget> From(Napi::Env env, Napi::Value v) {
    if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kFdBudgetTag)) return nullptr;
    return Unwrap(v.As<Napi::Object>())->budget_;
  }

 private:
  static size_t ArgLimit(Napi::Env env, Napi::Value v) {
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 9007199254740991.0 && d == floor(d))) {
      throw Napi::RangeError::New(env, "FdBudget: limit must be a non-negative integer");
    }
    return static_cast<size_t>(d);
  }
  Napi::Value GetHeld(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(budget_->held())); }
  Napi::Value GetLimit(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(budget_->limit())); }
  void SetLimit(const Napi::CallbackInfo& info, const Napi::Value& v) { budget_->set_limit(ArgLimit(info.Env(), v)); }

  std::shared_ptr<FdBudget> budget_;
};


// Node refuses every Node-API call that may enter JS (NAPI_PREAMBLE) once
// the environment cannot run JS any more (or an exception is pending);
// napi_strict_equals is such a call, with no side effect.
template <typename T>
bool CanCallIntoJs(Napi::ObjectWrap<T>& wrap) {
  Napi::HandleScope scope(wrap.Env());  // callers may be outside any JS frame
  napi_value self = wrap.Value();
  bool equal = false;
  return napi_strict_equals(wrap.Env(), self, self, &equal) == napi_ok;
}

// An exception a JS callback left pending becomes an uncaught exception, as
// for any event.
void RaisePendingException(napi_env env) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exception;
    if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) napi_fatal_exception(env, exception);
  }
}

[[noreturn]] void ThrowQueueFull(Napi::Env env, UnixSocket* core, const char* syscall) {
  Napi::Object details = Napi::Object::New(env);
  details.Set("queuedBytes", Napi::Number::New(env, static_cast<double>(core->queued_bytes())));
  details.Set("queuedMessages", Napi::Number::New(env, static_cast<double>(core->queued_sends())));
  details.Set("limit", Napi::Number::New(env, static_cast<double>(core->send_queue_limit())));
  throw Napi::Error(env, MakeError(env, "queuefull", 0, syscall, details));
}

// ---------------------------------------------------------------------------
// Socket: new Socket(fd, type, { maxFds, bufferSize }, onMessage, onAccept)
//   onMessage(err, data?: Buffer, fds?: number[])
//   onAccept(err, fd?: number)
// The JS object is held strongly from construction until close(): a socket is
// released by closing it, never by garbage collection.

class SocketWrap : public Napi::ObjectWrap<SocketWrap>, public UnixSocket::Delegate {
  // A queued send's completion callback and tag (see HoldCallback).
  struct PendingSend {
    Napi::FunctionReference fn;
    Napi::Reference<Napi::Value> tag;
    double number = 0;
    bool has_number = false;
    bool boxed = false;
  };

 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Socket",
                       {
                           InstanceMethod<&SocketWrap::Send>("send"),
                           InstanceMethod<&SocketWrap::SendTo>("sendTo"),
                           InstanceMethod<&SocketWrap::ReceiveFrom>("receiveFrom"),
                           InstanceMethod<&SocketWrap::StartReading>("startReading"),
                           InstanceMethod<&SocketWrap::StopReading>("stopReading"),
                           InstanceMethod<&SocketWrap::StartAccepting>("startAccepting"),
                           InstanceMethod<&SocketWrap::StopAccepting>("stopAccepting"),
                           InstanceMethod<&SocketWrap::RefHandle>("ref"),
                           InstanceMethod<&SocketWrap::UnrefHandle>("unref"),
                           InstanceMethod<&SocketWrap::CloseMethod>("close"),
                           InstanceAccessor<&SocketWrap::GetFd>("fd"),
                           InstanceAccessor<&SocketWrap::GetQueued>("queuedSends"),
                           InstanceAccessor<&SocketWrap::GetFullSends>("fullSends"),
                           InstanceAccessor<&SocketWrap::GetQueuedBytes>("queuedSendBytes"),
                           InstanceMethod<&SocketWrap::SetSendQueueLimits>("setSendQueueLimits"),
                           InstanceMethod<&SocketWrap::WatchHangup>("watchHangup"),
                           InstanceAccessor<&SocketWrap::GetBuffer>("buffer"),
                           InstanceMethod<&SocketWrap::UseBackgroundCloser>("useBackgroundCloser"),
                           InstanceMethod<&SocketWrap::CloseFdsInBackground>("closeInBackground"),
                           InstanceMethod<&SocketWrap::SetReceiveBufferSize>("setReceiveBufferSize"),
                           InstanceMethod<&SocketWrap::BackgroundCloseTickets>("backgroundCloseTickets"),
                       });
  }

  explicit SocketWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SocketWrap>(info) {
    Napi::Env env = info.Env();
    int fd = ArgFd(info, 0);
    int type = ArgSockType(info, 1);
    size_t max_fds = kMaxFdsPerMessage;
    size_t buffer_size = 64 * 1024;
    bool reuse_buffer = false;
    size_t queue_limit = 0;
    bool has_queue_limit = false;
    if (info.Length() > 2 && info[2].IsObject()) {
      Napi::Object opts = info[2].As<Napi::Object>();
      Napi::Value mf = opts.Get("maxFds");
      if (mf.IsNumber()) {
        int64_t v = mf.As<Napi::Number>().Int64Value();
        if (v < 0 || v > static_cast<int64_t>(kMaxFdsPerMessage)) {
          throw Napi::RangeError::New(env, "maxFds must be between 0 and 253");
        }
        max_fds = static_cast<size_t>(v);
      }
      Napi::Value bs = opts.Get("bufferSize");
      if (bs.IsNumber()) {
        int64_t v = bs.As<Napi::Number>().Int64Value();
        if (v < 1 || v > 64 * 1024 * 1024) {
          throw Napi::RangeError::New(env, "bufferSize must be between 1 and 64 MiB");
        }
        buffer_size = static_cast<size_t>(v);
      }
      reuse_buffer = opts.Get("reuseBuffer").ToBoolean();
      Napi::Value ql = opts.Get("sendQueueLimit");
      if (!ql.IsUndefined()) {
        double v = ql.IsNumber() ? ql.As<Napi::Number>().DoubleValue() : -1;
        if (!(v >= 0 && v <= 9007199254740991.0 && v == floor(v))) {
          throw Napi::RangeError::New(env, "sendQueueLimit must be a non-negative integer (bytes)");
        }
        queue_limit = static_cast<size_t>(v);
        has_queue_limit = true;
      }
    }
    if (info.Length() > 3 && info[3].IsFunction()) on_message_ = Napi::Persistent(info[3].As<Napi::Function>());
    if (info.Length() > 4 && info[4].IsFunction()) on_accept_ = Napi::Persistent(info[4].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      throw Napi::Error::New(env, "Socket: no event loop");
    }
    // reuseBuffer: messages land in one ArrayBuffer (exposed as `buffer`) and
    // onMessage gets the length instead of a fresh Buffer: no allocation per
    // message. The data is only valid until the callback returns. It is made
    // when the socket first reads (ProvideReceiveBuffer).
    reuse_buffer_ = reuse_buffer;
    int err = 0;
    core_ = UnixSocket::Create(loop, fd, type, max_fds, buffer_size, this, &err);
    if (core_ == nullptr) ThrowSystem(env, err, "uv_poll_init");
    FdHeldByNative(&fd, 1);  // closed by close() or this environment's cleanup hook
    if (has_queue_limit) core_->SetSendQueueLimits(queue_limit, SIZE_MAX);
    async_context_ = std::make_unique<Napi::AsyncContext>(env, "FdbridgeSocket", Value());
    Data(env)->sockets.insert(this);
    g_sockets_alive++;
    Ref();  // strong until close()
  }

  ~SocketWrap() override {
    // Only reached after close() or at environment teardown (the object is
    // strongly referenced while open); the cleanup hook has detached core_.
    if (core_ != nullptr) Detach(nullptr, nullptr);
    g_sockets_alive--;
  }

  // Closes the socket. Called by close() and by the cleanup hook.
  void Detach(void (*on_freed)(void*), void* arg) {
    if (core_ == nullptr) {
      return;
    }
    UnixSocket* core = core_;
    core_ = nullptr;
    InstanceData* data = Data(Env());
    if (data != nullptr) data->sockets.erase(this);
    // Queued sends fail with ECANCELED through OnSendComplete while core is
    // closing; deliver those before dropping the callbacks. At environment
    // teardown (on_freed set) JS can no longer run: drop them unheard.
    if (on_freed != nullptr) send_callbacks_.clear();
    closing_ = true;
    core->Close(on_freed, arg);
    closing_ = false;
    send_callbacks_.clear();
    // Break the cycle that would keep this object alive forever: these
    // persistent references are GC roots, and the JS functions' closures
    // (and the receive buffer's view) refer back to the JS wrapper, which
    // owns this object. A closed socket delivers no more events, so nothing
    // needs them; left set, every closed socket kept its receive buffer.
    on_message_.Reset();
    on_accept_.Reset();
    buffer_ref_.Reset();
  }

  // The socket of a JS Socket object, or nullptr when `value` is none (or closed).
  static UnixSocket* CoreOf(Napi::Env env, Napi::Value value) {
    InstanceData* data = Data(env);
    if (!value.IsObject() || data == nullptr || !value.As<Napi::Object>().InstanceOf(data->socket_ctor.Value())) {
      return nullptr;
    }
    return Unwrap(value.As<Napi::Object>())->core_;
  }

  void ReleaseJsRef() {
    if (!released_) {
      released_ = true;
      Unref();
    }
  }

 private:
  UnixSocket* Core(Napi::Env env, const char* what) {
    if (core_ == nullptr) {
      throw Napi::Error(env, SystemError(env, -EBADF, what));
    }
    return core_;
  }

  // send(data, fds?, callback?, tag?, exempt?) -> 0 sent now | 1 queued (callback(err|null, tag) later);
  // exempt: queued even past the send queue's limit.
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const char* data;
    size_t len;
    ArgBytes(info, 0, &data, &len);
    std::vector<int>& fds = scratch_fds_;
    ArgFdList(info, 1, &fds);
    UnixSocket* core = Core(env, "sendmsg");
    uint32_t id = core->NewSendId();
    bool exempt = info.Length() > 4 && info[4].ToBoolean();
    bool own = info.Length() > 5 && info[5].ToBoolean();
    // A caller's numbers: one of ours is refused as closed (fd_ops.h,
    // OwnedFdsLock), checked and sent under one lock. `own`: the fds are
    // our pins, sent on the caller's behalf.
    OwnedFdsLock owned;
    if (!own) {
      int refused = FdRefuseOwned(fds.data(), fds.size());
      if (refused < 0) ThrowSystem(env, refused, "sendmsg");
    }
    int r = core->Send(data, len, fds.data(), fds.size(), id, exempt);
    if (r < 0) {
      if (r == -EINVAL && core->type() == SOCK_STREAM && len == 0 && !fds.empty()) {
        throw Napi::RangeError::New(env, "a STREAM send of 0 bytes cannot carry fds: Linux would drop them");
      }
      ThrowSystem(env, r, "sendmsg");
    }
    if (r == UnixSocket::kQueueFull) ThrowQueueFull(env, core, "sendmsg");
    if (r == UnixSocket::kQueued) AwaitSendCompletion(info, 2, id);
    return Napi::Number::New(env, r);
  }

  // A queued send's callback: info[at] (a function) is called once with
  // (err, tag), tag being info[at + 1]. The message is queued already: from
  // here on nothing may throw, or the caller would think nothing was sent
  // while the message waits to go, and never hear of it.
  void AwaitSendCompletion(const Napi::CallbackInfo& info, size_t at, uint32_t id) {
    if (info.Length() <= at || !info[at].IsFunction()) return;
    send_callbacks_.emplace(id, HoldCallback(info.Env(), info[at], info.Length() > at + 1 ? info[at + 1] : info.Env().Undefined()));
  }

  // An optional tag (any value) comes back as the callback's second
  // argument, so one callback can serve every send: no closure per send.
  // References are made only for a queued send (not per message). Node-API
  // before version 10 refers to objects and functions only: a number is
  // kept as a double, another primitive in a one-element array. Never
  // throws: a reference that cannot be made (the environment is going
  // away) leaves that part empty.
  PendingSend HoldCallback(Napi::Env env, Napi::Value fn, Napi::Value tag) {
    PendingSend p;
    napi_ref ref = nullptr;
    if (napi_create_reference(env, fn, 1, &ref) == napi_ok) p.fn = Napi::FunctionReference(env, ref);
    if (tag.IsUndefined()) return p;
    if (tag.IsNumber()) {
      p.number = tag.As<Napi::Number>().DoubleValue();
      p.has_number = true;
      return p;
    }
    napi_value held = tag;
    if (!tag.IsObject() && !tag.IsFunction()) {
      napi_value box;
      if (napi_create_array_with_length(env, 1, &box) != napi_ok || napi_set_element(env, box, 0, tag) != napi_ok) {
        return p;
      }
      held = box;
      p.boxed = true;
    }
    ref = nullptr;
    if (napi_create_reference(env, held, 1, &ref) == napi_ok) p.tag = Napi::Reference<Napi::Value>(env, ref);
    return p;
  }

  napi_value TagValue(Napi::Env env, const PendingSend& p) {
    if (p.has_number) return Napi::Number::New(env, p.number);
    if (p.tag.IsEmpty()) return env.Undefined();
    Napi::Value v = p.tag.Value();
    if (!p.boxed) return v;
    napi_value out;
    if (napi_get_element(env, v, 0, &out) != napi_ok) return env.Undefined();
    return out;
  }

  // setSendQueueLimits(limit, pauseReadingAt): bytes; -1 for pauseReadingAt: never.
  Napi::Value SetSendQueueLimits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    double limit = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    double pause = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -2;
    if (!(limit >= 0 && limit <= 9007199254740991.0 && limit == floor(limit))) {
      throw Napi::RangeError::New(env, "the send queue limit must be a non-negative integer (bytes)");
    }
    if (!(pause == -1 || (pause >= 0 && pause <= 9007199254740991.0 && pause == floor(pause)))) {
      throw Napi::RangeError::New(env, "pauseReadingAt must be a non-negative integer (bytes), or -1 for never");
    }
    if (core_ != nullptr) {
      core_->SetSendQueueLimits(static_cast<size_t>(limit), pause < 0 ? SIZE_MAX : static_cast<size_t>(pause));
    }
    return env.Undefined();
  }
  Napi::Value WatchHangup(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->WatchHangup(info.Length() > 0 && info[0].ToBoolean());
    return info.Env().Undefined();
  }
  Napi::Value GetQueuedBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? static_cast<double>(core_->queued_bytes()) : 0);
  }

  // sendTo(name, abstract, data, fds?, waitWhenFull, callback?, tag?) -> 0 sent now | 1 queued
  // (a full receiver and waitWhenFull; callback(err|null, tag) later).
  Napi::Value SendTo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgName(info, 0);
    bool abstract = info.Length() > 1 && info[1].ToBoolean();
    struct sockaddr_un to;
    socklen_t to_len;
    int err = SockAddress(name.data(), name.size(), abstract, &to, &to_len);
    if (err != 0) ThrowSystem(env, err, "sendto");
    const char* data;
    size_t len;
    ArgBytes(info, 2, &data, &len);
    std::vector<int>& fds = scratch_fds_;
    ArgFdList(info, 3, &fds);
    bool wait = info.Length() > 4 && info[4].ToBoolean();
    UnixSocket* core = Core(env, "sendto");
    if (core->type() != SOCK_DGRAM) throw Napi::TypeError::New(env, "sendTo needs a DGRAM socket");
    uint32_t id = core->NewSendId();
    OwnedFdsLock owned;  // as in Send: a number of ours is refused as closed
    int refused = FdRefuseOwned(fds.data(), fds.size());
    if (refused < 0) ThrowSystem(env, refused, "sendto");
    int r = core->SendTo(&to, to_len, data, len, fds.data(), fds.size(), id, wait);
    if (r < 0) ThrowSystem(env, r, "sendto");
    if (r == UnixSocket::kQueueFull) ThrowQueueFull(env, core, "sendto");
    if (r == UnixSocket::kQueued) AwaitSendCompletion(info, 5, id);
    return Napi::Number::New(env, r);
  }

  Napi::Value ReceiveFrom(const Napi::CallbackInfo& info) {
    Core(info.Env(), "recvfrom")->ReceiveFrom(info.Length() > 0 && info[0].ToBoolean());
    return info.Env().Undefined();
  }

  Napi::Value StartReading(const Napi::CallbackInfo& info) {
    Core(info.Env(), "recvmsg")->StartReading();
    return info.Env().Undefined();
  }
  Napi::Value StopReading(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->StopReading();
    return info.Env().Undefined();
  }
  Napi::Value StartAccepting(const Napi::CallbackInfo& info) {
    Core(info.Env(), "accept4")->StartAccepting();
    return info.Env().Undefined();
  }
  Napi::Value StopAccepting(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->StopAccepting();
    return info.Env().Undefined();
  }
  Napi::Value RefHandle(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->Ref();
    return info.Env().Undefined();
  }
  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->Unref();
    return info.Env().Undefined();
  }
  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    Detach(nullptr, nullptr);
    ReleaseJsRef();
    return info.Env().Undefined();
  }
  Napi::Value GetFd(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? core_->fd() : -1);
  }
  char* ProvideReceiveBuffer(size_t len) override {
    if (!reuse_buffer_ || !CanCallIntoJs()) return nullptr;  // the socket's own; each message copied
    Napi::HandleScope scope(Env());
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(Env(), len);
    buffer_ref_ = Napi::Persistent(ab);
    return static_cast<char*>(ab.Data());
  }

  // setReceiveBufferSize(bytes) -> whether it took: before the first read only.
  Napi::Value SetReceiveBufferSize(const Napi::CallbackInfo& info) {
    double v = WholeNumber(info.Length() > 0 ? info[0] : info.Env().Undefined());
    if (v < 1 || v > 64 * 1024 * 1024) throw Napi::RangeError::New(info.Env(), "setReceiveBufferSize: bytes must be between 1 and 64 MiB");
    return Napi::Boolean::New(info.Env(), core_ != nullptr && core_->SetReceiveBufferSize(static_cast<size_t>(v)));
  }

  // useBackgroundCloser(on, owner = 0): see UnixSocket::UseBackgroundCloser.
  Napi::Value UseBackgroundCloser(const Napi::CallbackInfo& info) {
    double owner = info.Length() > 1 && !info[1].IsUndefined() ? WholeNumber(info[1]) : 0;
    if (owner < 0) throw Napi::TypeError::New(info.Env(), "useBackgroundCloser: owner must be a non-negative integer");
    if (core_ != nullptr) core_->UseBackgroundCloser(info.Length() > 0 && info[0].ToBoolean(), static_cast<uint64_t>(owner));
    return info.Env().Undefined();
  }
  // closeInBackground(fds) -> ticket: see UnixSocket::CloseInBackground. A
  // closed socket still hands them over (as owner 0's), and forgets the ticket.
  Napi::Value CloseFdsInBackground(const Napi::CallbackInfo& info) {
    std::vector<int> fds = ArgFdArray(info, "closeInBackground(fds): fds must be an array");
    uint64_t ticket = core_ != nullptr ? core_->CloseInBackground(fds.data(), fds.size())
                                       : FdCloseInBackground(fds.data(), fds.size(), 0, /*held_for_peer=*/true);
    return Napi::Number::New(info.Env(), static_cast<double>(ticket));
  }
  // backgroundCloseTickets() -> the tickets of this socket's background closes not yet done.
  Napi::Value BackgroundCloseTickets(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<uint64_t> tickets;
    if (core_ != nullptr) tickets = core_->BackgroundCloseTickets();
    Napi::Array arr = Napi::Array::New(env, tickets.size());
    for (size_t i = 0; i < tickets.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(tickets[i])));
    return arr;
  }
  Napi::Value GetBuffer(const Napi::CallbackInfo& info) {
    return buffer_ref_.IsEmpty() ? info.Env().Undefined() : buffer_ref_.Value();
  }
  Napi::Value GetFullSends(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? static_cast<double>(core_->full_sends()) : 0);
  }
  Napi::Value GetQueued(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? static_cast<double>(core_->queued_sends()) : 0);
  }

  // Calls a JS callback as an event-loop callback (microtasks run after it);
  // an exception it throws becomes an uncaught exception, as for any event.
  //
  // Returns false only when JS certainly did not run, so the caller still
  // owns whatever it meant to hand over (and must close it). That happens
  // while an environment shuts down: Node keeps running the loop to close its
  // handles (worker exit, worker.terminate(), process.exit in a worker)
  // before our cleanup hook closes the sockets, so a poll event can still
  // arrive, and accept4/recvmsg install fds that no JS callback will own.
  // If JS may have run (terminated part-way), the fds are left alone: a leak
  // is recoverable, a double close in a multi-threaded process is not.
  bool Emit(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) {
    Napi::Env env = Env();
    if (!CanCallIntoJs()) return false;
    napi_value result;
    napi_status status = napi_make_callback(env, *async_context_, Value(), fn.Value(), args.size(),
                                            args.begin(), &result);
    if (status != napi_ok) RaisePendingException(env);
    return true;
  }

  bool CanCallIntoJs() { return fdbridge::CanCallIntoJs(*this); }

  // An exception raised while building a callback's arguments (they call
  // into JS: the error factory) becomes an uncaught exception, unless the
  // environment is shutting down, when there is nobody left to tell.
  void ReportException(const Napi::Error& e) {
    if (CanCallIntoJs()) napi_fatal_exception(Env(), e.Value());
  }

  // The delegate callbacks below run from uv_poll, outside any JS frame: a C++
  // exception escaping them would abort the process, so none may escape.

  // A message's fds are ours until JS has them: closed here on every path
  // where they would reach nobody.
  void OnMessage(const char* data, size_t len, const int* fds, size_t nfds) override {
    UniqueFds owned(fds, nfds);
    Napi::Env env = Env();
    if (on_message_.IsEmpty() || !CanCallIntoJs()) return;
    Napi::HandleScope scope(env);
    napi_value buf;
    napi_value arr;
    try {
      buf = buffer_ref_.IsEmpty() ? static_cast<napi_value>(Napi::Buffer<char>::Copy(env, data, len))
                                  : static_cast<napi_value>(Napi::Number::New(env, static_cast<double>(len)));
      // Most replies carry no fds: undefined saves an array per message.
      arr = nfds == 0 ? static_cast<napi_value>(env.Undefined()) : static_cast<napi_value>(FdArray(env, fds, nfds));
    } catch (const Napi::Error& e) {
      ReportException(e);  // could not build the arguments
      return;
    }
    if (Emit(on_message_, {env.Null(), buf, arr})) owned.release();  // the handler's now
  }

  // onMessage(null, data, fds, from, credentials): `from` is null for an
  // unbound sender, a path string, or { abstract: name }; `credentials`
  // ({ pid, uid, gid }) only on a socket with SO_PASSCRED.
  void OnDatagram(const char* data, size_t len, const int* fds, size_t nfds, const ScmSender& sender) override {
    UniqueFds owned(fds, nfds);  // as in OnMessage
    Napi::Env env = Env();
    if (on_message_.IsEmpty() || !CanCallIntoJs()) return;
    Napi::HandleScope scope(env);
    napi_value buf, arr, from, cred;
    try {
      buf = buffer_ref_.IsEmpty() ? static_cast<napi_value>(Napi::Buffer<char>::Copy(env, data, len))
                                  : static_cast<napi_value>(Napi::Number::New(env, static_cast<double>(len)));
      arr = nfds == 0 ? static_cast<napi_value>(env.Undefined()) : static_cast<napi_value>(FdArray(env, fds, nfds));
      from = SenderAddress(env, sender);
      if (sender.has_cred) {
        Napi::Object c = Napi::Object::New(env);
        c.Set("pid", Napi::Number::New(env, sender.pid));
        c.Set("uid", Napi::Number::New(env, sender.uid));
        c.Set("gid", Napi::Number::New(env, sender.gid));
        cred = c;
      } else {
        cred = env.Undefined();
      }
    } catch (const Napi::Error& e) {
      ReportException(e);
      return;
    }
    if (Emit(on_message_, {env.Null(), buf, arr, from, cred})) owned.release();
  }

  static napi_value SenderAddress(Napi::Env env, const ScmSender& sender) {
    const size_t base = offsetof(struct sockaddr_un, sun_path);
    // An unbound sender: the kernel gives just the family (unix_copy_addr).
    if (sender.addr_len <= base) return env.Null();
    size_t n = sender.addr_len - base;
    if (n > sizeof(sender.addr.sun_path)) n = sizeof(sender.addr.sun_path);
    const char* p = sender.addr.sun_path;
    if (p[0] == '\0') {
      Napi::Object o = Napi::Object::New(env);
      o.Set("abstract", Napi::String::New(env, p + 1, n - 1));
      return o;
    }
    return Napi::String::New(env, p, strnlen(p, n));
  }

  void OnReceiveError(const RecvResult& r, const char* data, size_t len) override {
    Napi::Env env = Env();
    if (on_message_.IsEmpty() || !CanCallIntoJs()) return;
    Napi::HandleScope scope(env);
    napi_value err;
    try {
      err = ReceiveError(env, r, "recvmsg", data, len);
    } catch (const Napi::Error& e) {
      ReportException(e);
      return;
    }
    Emit(on_message_, {err});
  }

  void OnAccept(int fd, int err) override {
    UniqueFd owned(fd);  // ours until JS has it
    Napi::Env env = Env();
    if (on_accept_.IsEmpty() || !CanCallIntoJs()) return;
    Napi::HandleScope scope(env);
    if (fd < 0) {
      napi_value error;
      try {
        error = SystemError(env, err, "accept4");
      } catch (const Napi::Error& e) {
        ReportException(e);
        return;
      }
      Emit(on_accept_, {error});
    } else {
      if (Emit(on_accept_, {env.Null(), Napi::Number::New(env, fd)})) owned.release();
    }
  }

  void OnSendComplete(uint32_t id, int err) override {
    auto it = send_callbacks_.find(id);
    if (it == send_callbacks_.end()) return;
    PendingSend p = std::move(it->second);
    send_callbacks_.erase(it);
    if (p.fn.IsEmpty() || !CanCallIntoJs()) return;
    Napi::FunctionReference& fn = p.fn;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    napi_value arg;
    try {
      arg = err == 0 ? env.Null() : SystemError(env, err, "sendmsg");
    } catch (const Napi::Error& e) {
      ReportException(e);
      return;
    }
    napi_value tag = TagValue(env, p);
    if (closing_) {
      // Inside close(): called from JS already, so a plain call suffices.
      try {
        fn.Call({arg, tag});
      } catch (const Napi::Error& e) {
        ReportException(e);
      }
    } else {
      Emit(fn, {arg, tag});
    }
  }

  UnixSocket* core_ = nullptr;
  bool released_ = false;
  bool closing_ = false;
  std::vector<int> scratch_fds_;
  Napi::FunctionReference on_message_;
  Napi::FunctionReference on_accept_;

  std::unordered_map<uint32_t, PendingSend> send_callbacks_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
  Napi::Reference<Napi::ArrayBuffer> buffer_ref_;
  bool reuse_buffer_ = false;
};

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
                           InstanceMethod<&ChannelWrap::CloseGivenInBackground>("closeGivenInBackground"),
                           InstanceMethod<&ChannelWrap::ChargeTo>("chargeTo"),
                           InstanceMethod<&ChannelWrap::Add>("add"),
                           InstanceMethod<&ChannelWrap::Adopt>("adopt"),
                           InstanceMethod<&ChannelWrap::Sweep>("sweep"),
                           InstanceAccessor<&ChannelWrap::GetGivenCount>("givenCount"),
                           InstanceAccessor<&ChannelWrap::GetServed>("served"),
                       });
  }

  explicit ChannelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ChannelWrap>(info) {
    Napi::Env env = info.Env();
    UnixSocket* core = SocketWrap::CoreOf(env, info[0]);
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
  // { status: 'gone', errno } (0: end of file). Throws, with nothing sent,
  // as dup does. Whatever else arrived during the wait has been handed on
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
    } else if (r.status == FrameChannel::SyncDup::kTimeout) {
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
      o.Set("status", "timeout");
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

  // serve(on, maxGiven?): maxGiven caps the ledger (see FrameChannel::Serve).
  Napi::Value Serve(const Napi::CallbackInfo& info) {
    size_t max_given = SIZE_MAX;
    if (info.Length() > 1 && info[1].IsNumber()) {
      double v = info[1].As<Napi::Number>().DoubleValue();
      if (!(v >= 0)) throw Napi::RangeError::New(info.Env(), "serve: maxGiven must be >= 0");
      if (v < 1e15) max_given = static_cast<size_t>(v);
    }
    channel_->Serve(info.Length() > 0 && info[0].ToBoolean(), max_given);
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
    std::shared_ptr<FdBudget> budget = FdBudgetWrap::From(env, arg);
    if (!budget && !arg.IsNull() && !arg.IsUndefined()) throw Napi::TypeError::New(env, "chargeTo(budget): not an FdBudget");
    channel_->ChargeTo(std::move(budget));
    return env.Undefined();
  }
  Napi::Value Add(const Napi::CallbackInfo& info) {
    channel_->Add(ArgFd(info, 0));
    return info.Env().Undefined();
  }
  Napi::Value Adopt(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), channel_->Adopt(ArgFd(info, 0)));
  }
  Napi::Value Sweep(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->Sweep()));
  }
  Napi::Value GetGivenCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(channel_->given_count()));
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
      napi_create_array_with_length(env, r.fds, &result);
      for (uint32_t i = 0; i < r.fds; i++) {
        napi_value n;
        napi_create_int32(env, frame::FdAt(data, i), &n);
        napi_set_element(env, result, i, n);
      }
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

// ---------------------------------------------------------------------------
// Environment teardown (a worker thread exiting, or the process): close every
// socket still open, and let Node wait until libuv has closed the poll handles
// (a worker's loop may not be closed with live handles).

void OnSocketFreedDuringCleanup(void* arg) {
  InstanceData* data = static_cast<InstanceData*>(arg);
  if (--data->closing == 0 && data->cleanup_handle != nullptr) {
    napi_async_cleanup_hook_handle h = data->cleanup_handle;
    data->cleanup_handle = nullptr;
    napi_remove_async_cleanup_hook(h);
  }
}

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

// ---------------------------------------------------------------------------
// RelayPump: new RelayPump(inFd, outFd, onEvent) takes both fds and runs the
// remote transport's channel on them (native/relay_pump.h). onEvent:
//   (0, type, id, payload: Buffer)  a frame that is not a pumped stream's
//   (1, stream, half)               a pumped stream's half ended (1 out, 2 in)
//   (2)                             the output's backlog drained
//   (3, err, message)               the input ended (0), failed (-errno) or broke the protocol (1)
// Held strongly until close(), like a socket.

class RelayPumpWrap : public Napi::ObjectWrap<RelayPumpWrap>, public RelayPump::Delegate {
 public:
  static Napi::Function Define(Napi::Env env) {
    // The wire format's numbers as C++ has them, for the test that holds
    // them equal to remote-channel.ts's.
    Napi::Object c = Napi::Object::New(env);
    const std::pair<const char*, double> numbers[] = {
        {"HEADER_BYTES", RelayPump::kHeaderBytes},       {"DATA", RelayPump::kData},
        {"CREDIT", RelayPump::kCredit},                  {"EOF", RelayPump::kEof},
        {"STOP", RelayPump::kStop},                      {"MAX_DATA_BYTES", RelayPump::kMaxDataBytes},
        {"MAX_FRAME_BYTES", RelayPump::kMaxFrameBytes},  {"STREAM_WINDOW", static_cast<double>(RelayPump::kStreamWindow)},
        {"CONGESTED_BYTES", RelayPump::kCongestedBytes},
    };
    for (const auto& [name, value] : numbers) c.Set(name, Napi::Number::New(env, value));
    return DefineClass(env, "RelayPump",
                       {
                           StaticValue("constants", c),
                           InstanceMethod<&RelayPumpWrap::SendMethod>("send"),
                           InstanceMethod<&RelayPumpWrap::AddStream>("addStream"),
                           InstanceMethod<&RelayPumpWrap::Flush>("flush"),
                           InstanceMethod<&RelayPumpWrap::RemoveStream>("removeStream"),
                           InstanceMethod<&RelayPumpWrap::StreamBytes>("streamBytes"),
                           InstanceMethod<&RelayPumpWrap::StopInput>("stopInput"),
                           InstanceMethod<&RelayPumpWrap::EndOutput>("endOutput"),
                           InstanceMethod<&RelayPumpWrap::CloseOutput>("closeOutput"),
                           InstanceMethod<&RelayPumpWrap::CloseMethod>("close"),
                           InstanceAccessor<&RelayPumpWrap::GetQueued>("queuedBytes"),
                           InstanceAccessor<&RelayPumpWrap::GetCongested>("congested"),
                           InstanceAccessor<&RelayPumpWrap::GetOutputOpen>("outputOpen"),
                       });
  }

  explicit RelayPumpWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RelayPumpWrap>(info) {
    Napi::Env env = info.Env();
    int in_fd = ArgFd(info, 0);
    int out_fd = ArgFd(info, 1);
    if (in_fd == out_fd) throw Napi::RangeError::New(env, "RelayPump: the input and the output must be different fds");
    if (info.Length() < 3 || !info[2].IsFunction()) throw Napi::TypeError::New(env, "RelayPump(inFd, outFd, onEvent)");
    on_event_ = Napi::Persistent(info[2].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) throw Napi::Error::New(env, "RelayPump: no event loop");
    int err = 0;
    core_ = RelayPump::Create(loop, in_fd, out_fd, this, &err);
    if (core_ == nullptr) ThrowSystem(env, err, "uv_poll_init");
    int fds[] = {in_fd, out_fd};
    FdHeldByNative(fds, 2);  // closed by the pump (close() or this environment's cleanup hook)
    async_context_ = std::make_unique<Napi::AsyncContext>(env, "FdbridgeRelayPump", Value());
    Data(env)->pumps.insert(this);
    Ref();  // strong until close()
  }

  ~RelayPumpWrap() override {
    if (core_ != nullptr) Detach(nullptr, nullptr);
  }

  void Detach(void (*on_freed)(void*), void* arg) {
    if (core_ == nullptr) return;
    RelayPump* core = core_;
    core_ = nullptr;
    InstanceData* data = Data(Env());
    if (data != nullptr) data->pumps.erase(this);
    core->Close(on_freed, arg);
  }

 private:
  RelayPump* Core(Napi::Env env, const char* what) {
    if (core_ == nullptr) throw Napi::Error(env, SystemError(env, -EBADF, what));
    return core_;
  }

  static uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* what) {
    double v = i < info.Length() ? WholeNumber(info[i]) : -1;
    if (v < 0 || v > 4294967295.0) throw Napi::RangeError::New(info.Env(), std::string(what) + " must be a u32");
    return static_cast<uint32_t>(v);
  }

  // send(type, id, payload?)
  Napi::Value SendMethod(const Napi::CallbackInfo& info) {
    uint32_t type = ArgU32(info, 0, "type");
    if (type > 255) throw Napi::RangeError::New(info.Env(), "type must be a u8");
    uint32_t id = ArgU32(info, 1, "id");
    const char* data = nullptr;
    size_t len = 0;
    if (info.Length() > 2 && !info[2].IsUndefined()) ArgBytes(info, 2, &data, &len);
    if (len > RelayPump::kMaxFrameBytes) throw Napi::RangeError::New(info.Env(), "a frame's payload exceeds 64 MiB");
    if (core_ != nullptr) core_->Send(static_cast<uint8_t>(type), id, data, len);
    return info.Env().Undefined();
  }

  // addStream(id, fd, read, write, socket): the pump owns fd from here on.
  Napi::Value AddStream(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t id = ArgU32(info, 0, "stream");
    int fd = ArgFd(info, 1);
    bool read = info.Length() > 2 && info[2].ToBoolean();
    bool write = info.Length() > 3 && info[3].ToBoolean();
    bool socket = info.Length() > 4 && info[4].ToBoolean();
    if (!read && !write) throw Napi::RangeError::New(env, "addStream: a stream reads, writes, or both");
    CheckFdResult(env, Core(env, "uv_poll_init")->AddStream(id, fd, read, write, socket), "uv_poll_init");
    FdHeldByNative(&fd, 1);
    return env.Undefined();
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    uint32_t id = ArgU32(info, 0, "stream");
    return Napi::Boolean::New(info.Env(), core_ != nullptr && core_->Flush(id));
  }

  Napi::Value RemoveStream(const Napi::CallbackInfo& info) {
    uint32_t id = ArgU32(info, 0, "stream");
    if (core_ != nullptr) core_->RemoveStream(id);
    return info.Env().Undefined();
  }

  // streamBytes(id) -> [in, out] | undefined
  Napi::Value StreamBytes(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t id = ArgU32(info, 0, "stream");
    uint64_t in = 0, out = 0;
    if (core_ == nullptr || !core_->StreamBytes(id, &in, &out)) return env.Undefined();
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set(0u, Napi::Number::New(env, static_cast<double>(in)));
    a.Set(1u, Napi::Number::New(env, static_cast<double>(out)));
    return a;
  }

  Napi::Value StopInput(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->StopInput();
    return info.Env().Undefined();
  }
  Napi::Value EndOutput(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->EndOutput();
    return info.Env().Undefined();
  }
  Napi::Value CloseOutput(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->CloseOutput();
    return info.Env().Undefined();
  }

  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    Detach(nullptr, nullptr);
    if (!released_) {
      released_ = true;
      // No more events: break the cycle through the callback's closure.
      on_event_.Reset();
      Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Value GetQueued(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? static_cast<double>(core_->queued_bytes()) : 0);
  }
  Napi::Value GetCongested(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), core_ != nullptr && core_->congested());
  }
  Napi::Value GetOutputOpen(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), core_ != nullptr && core_->output_open());
  }

  // The delegate callbacks run from uv_poll, outside any JS frame: no C++
  // exception may escape them.
  void Emit(const std::initializer_list<napi_value>& args) {
    Napi::Env env = Env();
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    napi_value result;
    if (napi_make_callback(env, *async_context_, Value(), on_event_.Value(), args.size(), args.begin(), &result) != napi_ok) {
      RaisePendingException(env);
    }
  }

  void OnFrame(uint8_t type, uint32_t id, const char* data, size_t len) override {
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    napi_value args[4];
    try {
      args[0] = Napi::Number::New(env, 0);
      args[1] = Napi::Number::New(env, type);
      args[2] = Napi::Number::New(env, id);
      args[3] = Napi::Buffer<char>::Copy(env, data != nullptr ? data : "", len);
    } catch (const Napi::Error& e) {
      if (CanCallIntoJs(*this)) napi_fatal_exception(env, e.Value());
      return;
    }
    Emit({args[0], args[1], args[2], args[3]});
  }

  void OnStreamDone(uint32_t stream, int half) override {
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Emit({Napi::Number::New(env, 1), Napi::Number::New(env, stream), Napi::Number::New(env, half)});
  }

  void OnDrained() override {
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Emit({Napi::Number::New(env, 2)});
  }

  void OnEnd(int err, const std::string& message) override {
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Emit({Napi::Number::New(env, 3), Napi::Number::New(env, err), Napi::String::New(env, message)});
  }

  RelayPump* core_ = nullptr;
  bool released_ = false;
  Napi::FunctionReference on_event_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
};

void AsyncCleanup(napi_async_cleanup_hook_handle handle, void* arg) {
  InstanceData* data = static_cast<InstanceData*>(arg);
  std::vector<SocketWrap*> open(data->sockets.begin(), data->sockets.end());
  std::vector<ExitWatchWrap*> watches(data->watches.begin(), data->watches.end());
  std::vector<RelayPumpWrap*> pumps(data->pumps.begin(), data->pumps.end());
  data->closing = open.size() + watches.size() + pumps.size();
  if (data->closing == 0) {
    data->cleanup_handle = nullptr;
    napi_remove_async_cleanup_hook(handle);
    return;
  }
  for (SocketWrap* s : open) s->Detach(OnSocketFreedDuringCleanup, data);
  for (ExitWatchWrap* w : watches) w->Detach(OnSocketFreedDuringCleanup, data);
  for (RelayPumpWrap* p : pumps) p->Detach(OnSocketFreedDuringCleanup, data);
}

// ---------------------------------------------------------------------------
// Plain functions.

Napi::Value Init(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "init(makeError)");
  Data(info.Env())->make_error = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

// A background closer's ticket argument (one, or an array of them): each
// one closeInBackground gave.
std::vector<uint64_t> ArgTickets(Napi::Env env, const Napi::Value& v) {
  std::vector<uint64_t> tickets;
  auto add = [&](const Napi::Value& t) {
    double d = WholeNumber(t);
    if (d < 0) throw Napi::TypeError::New(env, "ticket must be a non-negative integer");
    if (!FdBackgroundCloseIssued(static_cast<uint64_t>(d))) {
      throw Napi::RangeError::New(env, "ticket " + std::to_string(static_cast<uint64_t>(d)) + " was never given by closeInBackground");
    }
    tickets.push_back(static_cast<uint64_t>(d));
  };
  if (v.IsArray()) {
    Napi::Array arr = v.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) add(arr.Get(i));
  } else {
    add(v);
  }
  return tickets;
}

// closeInBackground(fds, owner = 0) -> ticket: the fds are closed by the
// background closer as one batch of `owner`'s (fd_ops.h: FdCloseInBackground);
// returns at once. The batch is done once backgroundCloseDone(ticket).
Napi::Value CloseInBackground(const Napi::CallbackInfo& info) {
  std::vector<int> fds = ArgFdArray(info, "closeInBackground(fds, owner?): fds must be an array");
  double owner = info.Length() > 1 && !info[1].IsUndefined() ? WholeNumber(info[1]) : 0;
  if (owner < 0) throw Napi::TypeError::New(info.Env(), "closeInBackground: owner must be a non-negative integer");
  uint64_t ticket = FdCloseInBackground(fds.data(), fds.size(), static_cast<uint64_t>(owner), /*held_for_peer=*/true);
  return Napi::Number::New(info.Env(), static_cast<double>(ticket));
}

// backgroundCloseDone(ticket) -> whether that batch is closed, every fd of it.
Napi::Value BackgroundCloseDone(const Napi::CallbackInfo& info) {
  std::vector<uint64_t> t = ArgTickets(info.Env(), info.Length() > 0 ? info[0] : info.Env().Undefined());
  return Napi::Boolean::New(info.Env(), FdBackgroundCloseDone(t.front()));
}

// afterBackgroundCloses(ticket | tickets, callback, keepAlive = true):
// callback() runs on this thread's event loop once every batch named is
// closed (never synchronously). The thread-safe function that carries the
// news keeps the loop alive while it waits (unless keepAlive is false: a
// close blocked for good must not keep a process from exiting), and is
// released once called.
//
// The environment's teardown (process exit, a worker's end) deletes the
// thread-safe function even while a closer thread still holds it, and a
// close may end after that: its finalizer, which runs before the delete,
// marks it gone under the lock the closer thread uses it under.
Napi::Value AfterBackgroundCloses(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !(info[0].IsNumber() || info[0].IsArray()) || !info[1].IsFunction()) {
    throw Napi::TypeError::New(env, "afterBackgroundCloses(ticket, callback)");
  }
  std::vector<uint64_t> tickets = ArgTickets(env, info[0]);
  struct News {
    std::mutex mu;
    bool gone = false;
  };
  auto news = std::make_shared<News>();
  auto tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "afterBackgroundCloses", 0, 1,
                                            [news](Napi::Env) {
                                              std::lock_guard<std::mutex> lock(news->mu);
                                              news->gone = true;
                                            });
  if (info.Length() > 2 && info[2].IsBoolean() && !info[2].As<Napi::Boolean>().Value()) tsfn.Unref(env);
  FdAfterBackgroundCloses(tickets.data(), tickets.size(), [tsfn, news]() mutable {
    std::lock_guard<std::mutex> lock(news->mu);
    if (news->gone) return;
    // napi_closing (the teardown has begun, the delete not yet) drops the call.
    tsfn.NonBlockingCall();
    tsfn.Release();
  });
  return env.Undefined();
}

// backgroundClosesDone() -> background closes finished since the process started.
Napi::Value BackgroundClosesDone(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesDone()));
}

// openBackgroundCloses() -> the tickets of every batch not closed yet.
Napi::Value OpenBackgroundCloses(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<uint64_t> open = FdOpenBackgroundCloses();
  Napi::Array arr = Napi::Array::New(env, open.size());
  for (size_t i = 0; i < open.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(open[i])));
  return arr;
}

// closerThreads() -> { threads, busy }: the background closer's pool now.
Napi::Value CloserThreads(const Napi::CallbackInfo& info) {
  size_t threads, busy;
  FdCloserThreads(&threads, &busy);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("threads", Napi::Number::New(info.Env(), static_cast<double>(threads)));
  o.Set("busy", Napi::Number::New(info.Env(), static_cast<double>(busy)));
  o.Set("max", Napi::Number::New(info.Env(), static_cast<double>(kMaxCloserThreads)));
  o.Set("perOwner", Napi::Number::New(info.Env(), static_cast<double>(kCloserThreadsPerOwner)));
  return o;
}

Napi::Value BackgroundClosesPending(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesPending()));
}

// backgroundClosesOfPeerFds(owner?) -> the fds peers gave that wait for the closer (owner's only, if given).
Napi::Value BackgroundClosesOfPeerFds(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    double owner = WholeNumber(info[0]);
    if (owner < 0) throw Napi::TypeError::New(info.Env(), "backgroundClosesOfPeerFds: owner must be a non-negative integer");
    return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesOfPeerFds(static_cast<uint64_t>(owner))));
  }
  return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesOfPeerFds()));
}

// backgroundClosesOfOwnSockets(owner?) -> our own sockets that wait for the closer (owner's only, if given).
Napi::Value BackgroundClosesOfOwnSockets(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    double owner = WholeNumber(info[0]);
    if (owner < 0) throw Napi::TypeError::New(info.Env(), "backgroundClosesOfOwnSockets: owner must be a non-negative integer");
    return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesOfOwnSockets(static_cast<uint64_t>(owner))));
  }
  return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesOfOwnSockets()));
}

// pollReadable(fds) -> booleans: readable (or hung up) now, without waiting.
Napi::Value PollReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "pollReadable(fds): fds must be an array");
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<int> fds;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d == floor(d)) || d < 0 || d > 2147483647.0) throw Napi::TypeError::New(env, "each fd must be a non-negative integer");
    fds.push_back(static_cast<int>(d));
  }
  std::vector<bool> ready;
  CheckFdResult(env, FdPollReadable(fds.data(), fds.size(), &ready), "poll");
  Napi::Array out = Napi::Array::New(env, ready.size());
  for (size_t i = 0; i < ready.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::Boolean::New(env, ready[i]));
  return out;
}

// socketsAlive() -> socket objects not yet garbage collected (open or closed).
Napi::Value SocketsAlive(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(g_sockets_alive.load()));
}

// socketpair(type, own?): `own` numbers both ends above the fd floor and
// registers them as fdbridge's (see sock_ops.h).
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  int type = ArgSockType(info, 0);
  bool own = info.Length() > 1 && info[1].ToBoolean();
  int sv[2];
  CheckFdResult(info.Env(), SockPair(type, sv, own), "socketpair");
  return FdArray(info.Env(), sv, 2);
}

// listen(type, name, abstract, mode, backlog, passCred?, own?)
Napi::Value Listen(const Napi::CallbackInfo& info) {
  int type = ArgSockType(info, 0);
  std::string name = ArgName(info, 1);
  bool abstract = info.Length() > 2 && info[2].ToBoolean();
  int mode = ArgInt(info, 3, "mode");
  int backlog = ArgInt(info, 4, "backlog");
  bool pass_cred = info.Length() > 5 && info[5].ToBoolean();
  bool own = info.Length() > 6 && info[6].ToBoolean();
  int fd = SockListen(type, name.data(), name.size(), abstract, mode, backlog, pass_cred, own);
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), fd, "bind"));
}

// listenAgain(fd, backlog) -> the connections that were queued before (see
// SockListenAgain), the caller's to close; throws (none kept) on failure.
Napi::Value ListenAgain(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int backlog = ArgInt(info, 1, "backlog");
  UniqueFds queued;
  CheckFdResult(info.Env(), SockListenAgain(fd, backlog, &queued), "listen");
  Napi::Array arr = FdArray(info.Env(), queued.data(), queued.size());
  queued.release();  // JavaScript's now
  return arr;
}

// dgramSocket(own?) -> an unbound DGRAM socket (non-blocking, close-on-exec).
Napi::Value DgramSocket(const Napi::CallbackInfo& info) {
  bool own = info.Length() > 0 && info[0].ToBoolean();
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), SockOpen(SOCK_DGRAM, own), "socket"));
}

// connect(type, name, abstract, own?)
Napi::Value Connect(const Napi::CallbackInfo& info) {
  int type = ArgSockType(info, 0);
  std::string name = ArgName(info, 1);
  bool abstract = info.Length() > 2 && info[2].ToBoolean();
  bool own = info.Length() > 3 && info[3].ToBoolean();
  int fd = SockConnect(type, name.data(), name.size(), abstract, own);
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), fd, "connect"));
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), FdDupCloexec(ArgFd(info, 0)), "dup"));
}

// dupHigh(fd) -> a close-on-exec duplicate for fdbridge itself, numbered at
// or above the floor (FdDupHigh).
// A number fdbridge holds for itself is refused as closed (EBADF): see
// OwnedFdsLock in fd_ops.h.
Napi::Value DupHigh(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int r;
  {
    OwnedFdsLock owned;
    r = FdRefuseOwned(&fd, 1);
    if (r == 0) r = FdDupHigh(fd);
  }
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), r, "dup"));
}

// dupAll(fds, above = 0) -> duplicates (close-on-exec) for fdbridge itself,
// all or none, numbered at or above the floor, above the highest fd in the
// list and at least `above` (the caller passes the highest of a whole batch
// sent in several pieces): none can take the number of a closed fd later in
// the list or batch and make that entry "succeed" on the wrong file.
Napi::Value DupAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "dupAll(fds): fds must be an array");
  Napi::Array arr = info[0].As<Napi::Array>();
  uint32_t n = arr.Length();
  std::vector<int> fds(n);
  int highest = -1;
  if (info.Length() > 1 && !info[1].IsUndefined()) highest = ArgFd(info, 1) - 1;
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d == floor(d)) || d < 0 || d > 2147483647.0) throw Napi::TypeError::New(env, "each fd must be a non-negative integer");
    fds[i] = static_cast<int>(d);
    if (fds[i] > highest) highest = fds[i];
  }
  std::vector<int> out(n);
  int r;
  {
    OwnedFdsLock owned;  // as in dupHigh: a number of ours is refused as closed
    r = FdRefuseOwned(fds.data(), n);
    if (r == 0) r = FdDupAllHigh(fds.data(), n, highest + 1, out.data());
  }
  CheckFdResult(env, r, "dup");
  return FdArray(env, out.data(), n);
}

// disown(fd[, registration]): with a registration (registration(fd)), only
// that one leaves the registry (FdDisownRegistration).
Napi::Value Disown(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  if (info.Length() < 2 || info[1].IsUndefined()) {
    FdDisown(fd);
    return info.Env().Undefined();
  }
  double registration = WholeNumber(info[1]);
  if (registration < 0) throw Napi::TypeError::New(info.Env(), "disown(fd, registration): registration must be a non-negative integer");
  FdDisownRegistration(fd, static_cast<uint64_t>(registration));
  return info.Env().Undefined();
}

Napi::Value Registration(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdRegistration(ArgFd(info, 0))));
}

// own(fd): registers an fd fdbridge took over without making it, at the
// number it has (see NativeBinding.own).
Napi::Value Own(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  FdMarkOwned(&fd, 1);
  return info.Env().Undefined();
}

Napi::Value OwnedFdCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdOwnedCount()));
}

Napi::Value FdFloorFn(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), FdFloor());
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), FdClose(ArgFd(info, 0)), "close");
  return info.Env().Undefined();
}

Napi::Value Identity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FdIdentity id;
  CheckFdResult(env, FdIdentityOf(ArgFd(info, 0), &id), "fstat");
  Napi::Object o = Napi::Object::New(env);
  o.Set("dev", Napi::BigInt::New(env, id.dev));
  o.Set("ino", Napi::BigInt::New(env, id.ino));
  o.Set("mode", Napi::Number::New(env, id.mode));
  return o;
}

Napi::Value GetFlags(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), FdGetFlags(ArgFd(info, 0)), "fcntl"));
}

Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), FdSetCloexec(ArgFd(info, 0), info[1].ToBoolean()), "fcntl");
  return info.Env().Undefined();
}

Napi::Value SetNonblock(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), FdSetNonblock(ArgFd(info, 0), info[1].ToBoolean()), "fcntl");
  return info.Env().Undefined();
}

Napi::Value ListFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = info.Length() > 0 && info[0].IsNumber() ? ArgInt(info, 0, "pid") : 0;
  std::vector<FdEntry> entries;
  CheckFdResult(env, FdList(pid, &entries), "opendir");
  Napi::Array out = Napi::Array::New(env, entries.size());
  for (size_t i = 0; i < entries.size(); i++) {
    Napi::Array row = Napi::Array::New(env, 2);
    row.Set(0u, Napi::Number::New(env, entries[i].fd));
    row.Set(1u, Napi::String::New(env, entries[i].target));
    out.Set(static_cast<uint32_t>(i), row);
  }
  return out;
}

Napi::Value LimitValue(Napi::Env env, uint64_t v) {
  if (v == static_cast<uint64_t>(RLIM_INFINITY)) return Napi::Number::New(env, INFINITY);
  return Napi::Number::New(env, static_cast<double>(v));
}

uint64_t ArgLimit(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "limit must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v == INFINITY) return static_cast<uint64_t>(RLIM_INFINITY);
  if (!(v >= 0) || v != floor(v)) throw Napi::RangeError::New(info.Env(), "limit must be a non-negative integer");
  return static_cast<uint64_t>(v);
}

Napi::Value GetFdLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t soft, hard;
  CheckFdResult(env, FdGetLimit(&soft, &hard), "getrlimit");
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, LimitValue(env, soft));
  out.Set(1u, LimitValue(env, hard));
  return out;
}

Napi::Value SetFdLimit(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), FdSetLimit(ArgLimit(info, 0), ArgLimit(info, 1)), "setrlimit");
  return info.Env().Undefined();
}

Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid;
  uid_t uid;
  gid_t gid;
  CheckFdResult(env, SockPeerCred(ArgFd(info, 0), &pid, &uid, &gid), "getsockopt(SO_PEERCRED)");
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, pid));
  o.Set("uid", Napi::Number::New(env, uid));
  o.Set("gid", Napi::Number::New(env, gid));
  return o;
}

// peerPidfd(fd, own?), pidfdOpen(pid, own?): `own` as for socketpair.
Napi::Value PeerPidfd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool own = info.Length() > 1 && info[1].ToBoolean();
  int r;
  if (own) {
    OwnedFdsLock lock;  // made and registered as one step
    r = FdOwnHigh(SockPeerPidfd(fd));
  } else {
    r = SockPeerPidfd(fd);
  }
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), r, "getsockopt(SO_PEERPIDFD)"));
}

Napi::Value Pipe(const Napi::CallbackInfo& info) {
  int fds[2];
  CheckFdResult(info.Env(), FdPipe(fds), "pipe2");
  return FdArray(info.Env(), fds, 2);
}

Napi::Value Memfd(const Napi::CallbackInfo& info) {
  std::string name = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "fdbridge";
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), FdMemfd(name.c_str()), "memfd_create"));
}

Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), FdEventfd(), "eventfd"));
}

// ownLoopFds(): registers the fds the calling thread's event loop holds
// (LoopFds, and the io_uring rings nobody registered: RingFdsNotOwned) as
// fdbridge's, until this environment ends. For a worker thread
// fdbridge starts (the worker transport): its loop's fds are opened at the
// lowest free numbers, where a number the caller closed may be, and libuv
// keeps them there; registered, a caller naming one is refused (EBADF).
Napi::Value OwnLoopFds(const Napi::CallbackInfo& info) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(info.Env(), &loop) != napi_ok || loop == nullptr) return info.Env().Undefined();
  InstanceData* data = Data(info.Env());
  std::vector<int> fds;
  LoopFds(loop, &fds);
  RingFdsNotOwned(&fds);
  for (int fd : fds) {
    bool seen = false;
    for (int o : data->loop_fds) seen = seen || o == fd;
    if (!seen) data->loop_fds.push_back(fd);
  }
  FdMarkOwned(data->loop_fds.data(), data->loop_fds.size());
  return Napi::Number::New(info.Env(), static_cast<double>(data->loop_fds.size()));
}

// warmLoop(): the calling thread's event loop opens now the fds it would
// open lazily and keep (WarmLoopFds).
Napi::Value WarmLoop(const Napi::CallbackInfo& info) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(info.Env(), &loop) == napi_ok && loop != nullptr) WarmLoopFds(loop);
  return info.Env().Undefined();
}

Napi::Value PidfdOpenFn(const Napi::CallbackInfo& info) {
  int pid = ArgInt(info, 0, "pid");
  bool own = info.Length() > 1 && info[1].ToBoolean();
  int r;
  if (own) {
    OwnedFdsLock lock;  // made and registered as one step
    r = FdOwnHigh(PidfdOpen(pid));
  } else {
    r = PidfdOpen(pid);
  }
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), r, "pidfd_open"));
}

// watchChild(pid) -> id: the child process `pid` (just spawned by this
// environment, not reaped yet) is reaped by this environment's teardown if
// it has not exited by then (kReapGraceMs, then SIGKILL): Node reaps a child
// only through the loop of the thread that spawned it. unwatchChild(id) once
// Node has reaped it ('exit'). 0: not watched (no pidfd could be opened: no
// room for one, or a kernel before 5.3); Node alone reaps it then.
Napi::Value WatchChild(const Napi::CallbackInfo& info) {
  int pid = ArgInt(info, 0, "pid");
  if (pid <= 0) throw Napi::RangeError::New(info.Env(), "watchChild: pid must be positive");
  int pidfd;
  {
    OwnedFdsLock lock;  // made and registered as one step
    pidfd = FdOwnHigh(PidfdOpen(pid));
  }
  if (pidfd < 0) return Napi::Number::New(info.Env(), 0);
  FdHeldByNative(&pidfd, 1);  // closed by unwatchChild or the reaper
  InstanceData* data = Data(info.Env());
  uint32_t id = ++data->next_child;
  if (id == 0) id = ++data->next_child;
  data->children.emplace(id, pidfd);
  return Napi::Number::New(info.Env(), id);
}

Napi::Value UnwatchChild(const Napi::CallbackInfo& info) {
  double id = info.Length() > 0 ? WholeNumber(info[0]) : -1;
  if (id < 0 || id > 4294967295.0) throw Napi::TypeError::New(info.Env(), "unwatchChild(id): id must be what watchChild returned");
  InstanceData* data = Data(info.Env());
  auto it = data->children.find(static_cast<uint32_t>(id));
  if (it != data->children.end()) {
    FdClose(it->second);
    data->children.erase(it);
  }
  return info.Env().Undefined();
}

// reapsPending() -> environments' teardowns still waiting for their child
// processes (ReapsPending).
Napi::Value ReapsPendingFn(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(ReapsPending()));
}

// runtimeCloses(fd) -> registration: `fd`, ours, is a libuv stream's to
// close from now on (fd_ops.h, FdRuntimeCloses).
Napi::Value RuntimeCloses(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdRuntimeCloses(ArgFd(info, 0))));
}

Napi::Value PidfdGetfdFn(const Napi::CallbackInfo& info) {
  int r = PidfdGetfdHigh(ArgFd(info, 0), ArgFd(info, 1));
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), r, "pidfd_getfd"));
}

// pidfdGetfdAll(pidfd, fds): pidfdGetfd for each, all or none, in one call.
Napi::Value PidfdGetfdAllFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pidfd = ArgFd(info, 0);
  std::vector<int> targets;
  ArgFdList(info, 1, &targets);
  std::vector<int> out(targets.size());
  CheckFdResult(env, PidfdGetfdAllHigh(pidfd, targets.data(), targets.size(), out.data()), "pidfd_getfd");
  return FdArray(env, out.data(), out.size());
}

// closeAll(fds): close for each, in one call; what is not an open fd is
// passed over. Returns how many closed.
Napi::Value CloseAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "closeAll(fds): fds must be an array");
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<int> fds;
  fds.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    double d = WholeNumber(arr.Get(i));
    if (d >= 0 && d <= 2147483647.0) fds.push_back(static_cast<int>(d));
  }
  return Napi::Number::New(env, static_cast<double>(FdCloseAll(fds.data(), fds.size())));
}

Napi::Value SocketType(const Napi::CallbackInfo& info) {
  int r = SockType(ArgFd(info, 0));
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), r, "getsockopt(SO_TYPE)"));
}

Napi::Value SetPassRights(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), SockSetPassRights(ArgFd(info, 0), info[1].ToBoolean()), "setsockopt(SO_PASSRIGHTS)");
  return info.Env().Undefined();
}

Napi::Value GetPassRights(const Napi::CallbackInfo& info) {
  int r = SockGetPassRights(ArgFd(info, 0));
  return Napi::Boolean::New(info.Env(), CheckFdResult(info.Env(), r, "getsockopt(SO_PASSRIGHTS)") != 0);
}

Napi::Value SetPassCred(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), SockSetPassCred(ArgFd(info, 0), info[1].ToBoolean()), "setsockopt(SO_PASSCRED)");
  return info.Env().Undefined();
}

Napi::Value SetPassPidfd(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), SockSetPassPidfd(ArgFd(info, 0), info[1].ToBoolean()), "setsockopt(SO_PASSPIDFD)");
  return info.Env().Undefined();
}

Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), SockShutdown(ArgFd(info, 0), ArgInt(info, 1, "how")), "shutdown");
  return info.Env().Undefined();
}

// sendNow(fd, data, fds?) -> bytes sent. One non-blocking sendmsg, for tests
// and for peers that must send exactly what they are told (EAGAIN throws).
Napi::Value SendNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  const char* data;
  size_t len;
  ArgBytes(info, 1, &data, &len);
  std::vector<int> fds;
  ArgFdList(info, 2, &fds);
  ssize_t n = ScmSend(fd, data, len, fds.data(), fds.size());
  if (n < 0) ThrowSystem(env, static_cast<int>(n), "sendmsg");
  return Napi::Number::New(env, static_cast<double>(n));
}

// recvNow(fd, bufferSize, maxFds) -> { data, fds } | null (nothing to read).
// One non-blocking recvmsg; EOF and truncation throw typed errors.
Napi::Value RecvNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  int size = ArgInt(info, 1, "bufferSize");
  int max_fds = ArgInt(info, 2, "maxFds");
  if (size < 1 || size > 64 * 1024 * 1024) throw Napi::RangeError::New(env, "bufferSize must be between 1 and 64 MiB");
  if (max_fds < 0 || max_fds > static_cast<int>(kMaxFdsPerMessage)) {
    throw Napi::RangeError::New(env, "maxFds must be between 0 and 253");
  }
  int type = CheckFdResult(env, SockType(fd), "getsockopt(SO_TYPE)");
  std::vector<char> buf(static_cast<size_t>(size));
  size_t control_len = ScmControlSpace(static_cast<size_t>(max_fds));
  std::unique_ptr<char[]> control(new char[control_len]);
  std::vector<int> fds(kMaxFdsPerMessage);
  RecvResult r;
  ScmRecv(fd, type, buf.data(), buf.size(), control.get(), control_len, fds.data(),
          static_cast<size_t>(max_fds), &r);
  if (r.status == RecvStatus::kWouldBlock) return env.Null();
  if (r.status != RecvStatus::kMessage) throw Napi::Error(env, ReceiveError(env, r, "recvmsg"));
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", Napi::Buffer<char>::Copy(env, buf.data(), r.bytes));
  o.Set("fds", FdArray(env, fds.data(), r.nfds));
  o.Set("otherControlMessages", Napi::Number::New(env, static_cast<double>(r.other_cmsgs)));
  return o;
}

// frameCodec: native/frame_format.h seen from JS, for the test that runs the
// same frame vectors through both codecs (test/native/cross-codec.test.ts).
//   decode(data, nfds) -> null (malformed) | { type, id, payload: 'none' | 'fds' | 'json', count, fds? }
//   encodeFdList(type, id, fds) -> Buffer
//   constants: the format's numbers as C++ has them
Napi::Value FrameDecode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* data;
  size_t len;
  ArgBytes(info, 0, &data, &len);
  int nfds = ArgInt(info, 1, "nfds");
  if (nfds < 0) throw Napi::RangeError::New(env, "nfds must be >= 0");
  frame::Decoded f;
  if (!frame::Decode(data, len, static_cast<size_t>(nfds), &f)) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", Napi::Number::New(env, f.header.type));
  o.Set("id", Napi::Number::New(env, f.header.id));
  o.Set("payload", Napi::String::New(env, f.payload == frame::Payload::kFds ? "fds" : f.payload == frame::Payload::kJson ? "json" : "none"));
  o.Set("count", Napi::Number::New(env, static_cast<double>(f.count)));
  if (f.payload == frame::Payload::kFds) {
    Napi::Array fds = Napi::Array::New(env, f.count);
    for (size_t i = 0; i < f.count; i++) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, frame::FdAt(data, i)));
    o.Set("fds", fds);
  }
  return o;
}

Napi::Value FrameEncodeFdList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int type = ArgInt(info, 0, "type");
  double idv = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  if (!(idv >= 0 && idv <= 4294967295.0 && idv == floor(idv))) throw Napi::RangeError::New(env, "id must be a u32");
  std::vector<int> fds;
  ArgFdList(info, 2, &fds);
  std::vector<char> out(frame::FdListBytes(fds.size()));
  size_t n = frame::EncodeFdList(out.data(), static_cast<uint8_t>(type), static_cast<uint32_t>(idv), fds.data(), fds.size());
  return Napi::Buffer<char>::Copy(env, out.data(), n);
}

Napi::Object FrameCodec(Napi::Env env) {
  Napi::Object codec = Napi::Object::New(env);
  codec.Set("decode", Napi::Function::New<FrameDecode>(env, "decode"));
  codec.Set("encodeFdList", Napi::Function::New<FrameEncodeFdList>(env, "encodeFdList"));
  Napi::Object c = Napi::Object::New(env);
  const std::pair<const char*, double> numbers[] = {
      {"HELLO", frame::kHello},   {"READY", frame::kReady},     {"REFUSED", frame::kRefused},
      {"DUP", frame::kDup},       {"DUP_OK", frame::kDupOk},    {"CALL", frame::kCall},
      {"RESULT", frame::kResult}, {"ERROR", frame::kError},     {"RELEASE", frame::kRelease},
      {"CLOSE", frame::kClose},   {"CLOSED", frame::kClosed},   {"GETFD", frame::kGetfd},
      {"PROTOCOL_VERSION", frame::kProtocolVersion},           {"HEADER_BYTES", frame::kHeaderBytes},
      {"MAX_FRAME_BYTES", frame::kMaxFrameBytes},              {"MAX_FDS_PER_FRAME", frame::kMaxFdsPerFrame},
  };
  for (const auto& [name, value] : numbers) c.Set(name, Napi::Number::New(env, value));
  codec.Set("constants", c);
  return codec;
}

}  // namespace

// Threads of this addon outlive the environment that started them: the
// background closers, and the child reaper (up to its grace after a worker
// ends). Node dlcloses an addon when the last environment that loaded it
// ends, so if a worker thread was the only one, those threads would go on in
// unmapped code (the process dies with SIGSEGV). Opening ourselves once more
// with RTLD_NODELETE keeps the code mapped for the life of the process; the
// handle is never closed, on purpose.
static void KeepLoadedForThreads() {
  static std::once_flag once;
  std::call_once(once, [] {
    Dl_info self;
    if (dladdr(reinterpret_cast<void*>(&KeepLoadedForThreads), &self) != 0 && self.dli_fname != nullptr) {
      dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    }
  });
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  KeepLoadedForThreads();
  InstanceData* data = new InstanceData();
  // Module initialisation runs on the environment's own thread, the one
  // every JS call of this environment runs on.
  data->holder = FdNewHolder();
  FdSetThreadHolder(data->holder);
  env.SetInstanceData<InstanceData>(data);
  napi_add_async_cleanup_hook(env, AsyncCleanup, data, &data->cleanup_handle);

  Napi::Function socket = SocketWrap::Define(env);
  data->socket_ctor = Napi::Persistent(socket);
  exports.Set("Socket", socket);
  exports.Set("ExitWatch", ExitWatchWrap::Define(env));
  exports.Set("FrameChannel", ChannelWrap::Define(env));
  exports.Set("FdBudget", FdBudgetWrap::Define(env));
  exports.Set("RelayPump", RelayPumpWrap::Define(env));

  exports.Set("init", Napi::Function::New<Init>(env, "init"));
  exports.Set("closeInBackground", Napi::Function::New<CloseInBackground>(env, "closeInBackground"));
  exports.Set("afterBackgroundCloses", Napi::Function::New<AfterBackgroundCloses>(env, "afterBackgroundCloses"));
  exports.Set("backgroundClosesDone", Napi::Function::New<BackgroundClosesDone>(env, "backgroundClosesDone"));
  exports.Set("backgroundCloseDone", Napi::Function::New<BackgroundCloseDone>(env, "backgroundCloseDone"));
  exports.Set("closerThreads", Napi::Function::New<CloserThreads>(env, "closerThreads"));
  exports.Set("openBackgroundCloses", Napi::Function::New<OpenBackgroundCloses>(env, "openBackgroundCloses"));
  exports.Set("backgroundClosesPending", Napi::Function::New<BackgroundClosesPending>(env, "backgroundClosesPending"));
  exports.Set("backgroundClosesOfPeerFds", Napi::Function::New<BackgroundClosesOfPeerFds>(env, "backgroundClosesOfPeerFds"));
  exports.Set("backgroundClosesOfOwnSockets", Napi::Function::New<BackgroundClosesOfOwnSockets>(env, "backgroundClosesOfOwnSockets"));
  exports.Set("pollReadable", Napi::Function::New<PollReadable>(env, "pollReadable"));
  exports.Set("socketsAlive", Napi::Function::New<SocketsAlive>(env, "socketsAlive"));
  exports.Set("socketpair", Napi::Function::New<SocketPair>(env, "socketpair"));
  exports.Set("listen", Napi::Function::New<Listen>(env, "listen"));
  exports.Set("listenAgain", Napi::Function::New<ListenAgain>(env, "listenAgain"));
  exports.Set("connect", Napi::Function::New<Connect>(env, "connect"));
  exports.Set("dgramSocket", Napi::Function::New<DgramSocket>(env, "dgramSocket"));
  exports.Set("dup", Napi::Function::New<Dup>(env, "dup"));
  exports.Set("close", Napi::Function::New<Close>(env, "close"));
  exports.Set("dupAll", Napi::Function::New<DupAll>(env, "dupAll"));
  exports.Set("ownLoopFds", Napi::Function::New<OwnLoopFds>(env, "ownLoopFds"));
  exports.Set("own", Napi::Function::New<Own>(env, "own"));
  exports.Set("disown", Napi::Function::New<Disown>(env, "disown"));
  exports.Set("registration", Napi::Function::New<Registration>(env, "registration"));
  exports.Set("ownedFdCount", Napi::Function::New<OwnedFdCount>(env, "ownedFdCount"));
  exports.Set("dupHigh", Napi::Function::New<DupHigh>(env, "dupHigh"));
  exports.Set("warmLoop", Napi::Function::New<WarmLoop>(env, "warmLoop"));
  exports.Set("fdFloor", Napi::Function::New<FdFloorFn>(env, "fdFloor"));
  exports.Set("identity", Napi::Function::New<Identity>(env, "identity"));
  exports.Set("getFlags", Napi::Function::New<GetFlags>(env, "getFlags"));
  exports.Set("setCloexec", Napi::Function::New<SetCloexec>(env, "setCloexec"));
  exports.Set("setNonblock", Napi::Function::New<SetNonblock>(env, "setNonblock"));
  exports.Set("listFds", Napi::Function::New<ListFds>(env, "listFds"));
  exports.Set("getFdLimit", Napi::Function::New<GetFdLimit>(env, "getFdLimit"));
  exports.Set("setFdLimit", Napi::Function::New<SetFdLimit>(env, "setFdLimit"));
  exports.Set("peerCred", Napi::Function::New<PeerCred>(env, "peerCred"));
  exports.Set("peerPidfd", Napi::Function::New<PeerPidfd>(env, "peerPidfd"));
  exports.Set("pipe", Napi::Function::New<Pipe>(env, "pipe"));
  exports.Set("memfd", Napi::Function::New<Memfd>(env, "memfd"));
  exports.Set("eventfd", Napi::Function::New<Eventfd>(env, "eventfd"));
  exports.Set("pidfdOpen", Napi::Function::New<PidfdOpenFn>(env, "pidfdOpen"));
  exports.Set("pidfdGetfd", Napi::Function::New<PidfdGetfdFn>(env, "pidfdGetfd"));
  exports.Set("pidfdGetfdAll", Napi::Function::New<PidfdGetfdAllFn>(env, "pidfdGetfdAll"));
  exports.Set("closeAll", Napi::Function::New<CloseAll>(env, "closeAll"));
  exports.Set("watchChild", Napi::Function::New<WatchChild>(env, "watchChild"));
  exports.Set("unwatchChild", Napi::Function::New<UnwatchChild>(env, "unwatchChild"));
  exports.Set("reapsPending", Napi::Function::New<ReapsPendingFn>(env, "reapsPending"));
  exports.Set("runtimeCloses", Napi::Function::New<RuntimeCloses>(env, "runtimeCloses"));
  exports.Set("socketType", Napi::Function::New<SocketType>(env, "socketType"));
  exports.Set("setPassRights", Napi::Function::New<SetPassRights>(env, "setPassRights"));
  exports.Set("getPassRights", Napi::Function::New<GetPassRights>(env, "getPassRights"));
  exports.Set("setPassCred", Napi::Function::New<SetPassCred>(env, "setPassCred"));
  exports.Set("setPassPidfd", Napi::Function::New<SetPassPidfd>(env, "setPassPidfd"));
  exports.Set("shutdown", Napi::Function::New<Shutdown>(env, "shutdown"));
  exports.Set("sendNow", Napi::Function::New<SendNow>(env, "sendNow"));
  exports.Set("recvNow", Napi::Function::New<RecvNow>(env, "recvNow"));
  exports.Set("frameCodec", FrameCodec(env));

  Napi::Object constants = Napi::Object::New(env);
  constants.Set("SOCK_STREAM", Napi::Number::New(env, SOCK_STREAM));
  constants.Set("SOCK_DGRAM", Napi::Number::New(env, SOCK_DGRAM));
  constants.Set("SOCK_SEQPACKET", Napi::Number::New(env, SOCK_SEQPACKET));
  constants.Set("SHUT_RD", Napi::Number::New(env, SHUT_RD));
  constants.Set("SHUT_WR", Napi::Number::New(env, SHUT_WR));
  constants.Set("SHUT_RDWR", Napi::Number::New(env, SHUT_RDWR));
  constants.Set("MAX_FDS_PER_MESSAGE", Napi::Number::New(env, static_cast<double>(kMaxFdsPerMessage)));
  constants.Set("MAX_SOCKET_PATH_BYTES", Napi::Number::New(env, static_cast<double>(kMaxSocketPathBytes)));
  exports.Set("constants", constants);
  return exports;
}

}  // namespace fdbridge

static Napi::Object Init(Napi::Env env, Napi::Object exports) { return fdbridge::InitModule(env, exports); }

NODE_API_MODULE(NODE_GYP_MODULE_NAME, Init)
