// The Node-API binding's shared part: argument readers, the typed-error
// factory, the per-environment instance data and the helpers every bound
// class uses. Each bound class, and each group of plain functions, has a
// file of its own (addon_*.cc); addon.cc is the module's entry point.
//
// Errors: failures are turned into JS errors by a factory that src/native.ts
// registers with init(), so every error the addon raises is already one of the
// typed fdbridge errors: makeError(kind, errno, syscall, details).
#ifndef FDBRIDGE_ADDON_H_
#define FDBRIDGE_ADDON_H_

#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "child_reaper.h"
#include "fd_budget.h"
#include "fd_ops.h"
#include "scm_rights.h"
#include "unix_socket.h"

namespace fdbridge {

// A non-negative integer that a double holds exactly, or -1.
inline double WholeNumber(const Napi::Value& v) {
  if (!v.IsNumber()) return -1;
  double d = v.As<Napi::Number>().DoubleValue();
  return d == floor(d) && d >= 0 && d <= 9007199254740991.0 ? d : -1;
}

// Background closer tickets (closeInBackground's) as a JS array of numbers.
inline Napi::Array TicketArray(Napi::Env env, const std::vector<uint64_t>& tickets) {
  Napi::Array arr = Napi::Array::New(env, tickets.size());
  for (size_t i = 0; i < tickets.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(tickets[i])));
  return arr;
}

// Reads closeInBackground's fds argument: non-negative integers.
inline std::vector<int> ArgFdArray(const Napi::CallbackInfo& info, const char* usage) {
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

// closeClientFds's install generations (installGenerations' numbers, as a
// command held its fds): `value` an array as long as the list, each a
// non-negative integer, or undefined (none checked: an empty list).
inline std::vector<uint64_t> ArgInstalls(Napi::Env env, Napi::Value value, size_t n, const char* usage) {
  std::vector<uint64_t> installs;
  if (value.IsUndefined()) return installs;
  if (!value.IsArray() || value.As<Napi::Array>().Length() != n) throw Napi::TypeError::New(env, usage);
  Napi::Array arr = value.As<Napi::Array>();
  installs.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    double d = WholeNumber(arr.Get(i));
    if (d < 0) throw Napi::TypeError::New(env, usage);
    installs[i] = static_cast<uint64_t>(d);
  }
  return installs;
}

class MessageBatch;
class SocketWrap;
class ExitWatchWrap;
class RelayPumpWrap;

struct InstanceData {
  // Loop starts this environment began (loopStartBegins) and did not end:
  // its worker threads have stopped by the time it ends (Node stops them
  // before the environment's cleanup), so their loops are closed.
  std::vector<uint64_t> loop_starts;
  // A test's socket (testHoldTeardown): the teardown's last step says so on
  // it and waits for an answer.
  int hold_teardown_fd = -1;
  // What this environment's fds are held for (fd_ops.h, FdSetThreadHolder).
  uint64_t holder = 0;
  // Child processes this environment's connections started and Node has not
  // reaped yet (watchChild): watch id -> a pidfd of ours, with its
  // registration and file, so that a number the program closed behind
  // fdbridge's back, and another fd took, is never closed as the pidfd
  // (FdStillHeld).
  struct WatchedChild {
    int pidfd;
    uint64_t registration;
    FdIdentity identity;
  };
  std::unordered_map<uint32_t, WatchedChild> children;
  uint32_t next_child = 0;
  // A spawn begun (spawnBegins) whose process is not watched yet.
  SpawnWindow spawning;
  // fds the addon made or received and handed to this environment's
  // JavaScript as plain numbers, not registered as fdbridge's (fd_ops.h:
  // those are held for the environment already), for the library to take
  // over in its next step: wrap in a Socket or RelayPump, close, or hand on
  // to its caller or another thread (KeepForJs, ClaimFromJs). A worker's
  // JavaScript can be stopped between any two of its calls (terminate()
  // takes effect at the next function call or loop iteration, and no catch
  // or finally runs), so the number a native call returned may reach
  // nobody: the teardown closes what is still here. Only this
  // environment's thread adds and removes; a number stays here only while
  // it is open and the library's (every close and every hand-over claims
  // it first), so the teardown never closes a number someone else holds.
  std::unordered_set<int> unclaimed;
  // Watches for fds closed by someone else (FdWatchClosedByOthers) that
  // this environment's leak checks started and have not ended: ended by its
  // teardown (a worker terminated mid-check runs no release()), or the
  // process's count of watchers would stay up for good (its notes never
  // dropped, fdbridge's own fds closed one by one instead of by
  // close_range, FdCloseAll).
  size_t closed_by_others_watches = 0;
  // Whether this is the process's main thread, whose environment ends with
  // the process: the kernel closes whatever is left then, and closing
  // numbers during the exit could only take some from under the runtime.
  bool main_thread = false;
  // The Node threadId a worker's environment is registered under for its
  // wake-up (thread_wake.h, wakeRegisterThread); 0: none.
  uint64_t wake_thread_id = 0;

  // The environment's end (a worker thread's exit or termination, the
  // process's exit), after Node has closed every handle and our cleanup hook
  // every socket, watch and pump: whatever its JavaScript still held is
  // closed now, as it never will be otherwise (the threads share the fd
  // table; the duplicates a command here was given and did not adopt, pins,
  // fds that arrived and were never claimed), once the child processes it
  // started have exited and been reaped (a pidfd command may pull pins by
  // number until it exits).
  ~InstanceData();  // addon_env.cc
  Napi::FunctionReference make_error;
  // init()'s second argument: (list: Int32Array, n) -> number[], the first
  // n numbers of `list` as a plain array (IntArrayValue).
  Napi::FunctionReference int_array;
  Napi::FunctionReference socket_ctor;
  std::unordered_set<SocketWrap*> sockets;
  std::unordered_set<ExitWatchWrap*> watches;
  std::unordered_set<RelayPumpWrap*> pumps;
  napi_async_cleanup_hook_handle cleanup_handle = nullptr;
  size_t closing = 0;
  // Messages of batched sockets, handed to JS once per loop turn
  // (setMessageBatchHandler, addon_env.cc); made by the first handler set.
  MessageBatch* batch = nullptr;
};

inline InstanceData* Data(Napi::Env env) { return env.GetInstanceData<InstanceData>(); }

// kind: "system" (errno/syscall), "eof", "truncated".
inline Napi::Value MakeError(Napi::Env env, const char* kind, int neg_errno, const char* syscall,
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

inline Napi::Value SystemError(Napi::Env env, int neg_errno, const char* syscall) {
  return MakeError(env, "system", neg_errno, syscall, Napi::Object::New(env));
}

[[noreturn]] inline void ThrowSystem(Napi::Env env, int neg_errno, const char* syscall) {
  throw Napi::Error(env, SystemError(env, neg_errno, syscall));
}

// `operation` (new UnixSocket, fromListeningFd) refused the caller's `fd`:
// one of fdbridge's own (FdRefuseOwned). A SystemError EBADF that names the
// operation and the fd (src/errors.ts, ownFdRefusal).
[[noreturn]] inline void ThrowOwnFd(Napi::Env env, const std::string& operation, int fd) {
  Napi::Object details = Napi::Object::New(env);
  details.Set("fd", Napi::Number::New(env, fd));
  throw Napi::Error(env, MakeError(env, "ownfd", -EBADF, operation.c_str(), details));
}

// closeClientFds refused `fd` of the list `fds` (FdCloseClientFdsInBackground's
// `r`): named twice in the list (-EINVAL), a TypeError that names it; else
// one of fdbridge's own fds, or another file than the adopted one, not the
// client's: a SystemError EBADF that names it and its index in `fds` (its
// first: a number named twice is refused as such first).
[[noreturn]] inline void ThrowNotClients(Napi::Env env, int r, int fd, const std::vector<int>& fds) {
  if (r == -EINVAL) {
    throw Napi::TypeError::New(env, "closeClientFds: fd " + std::to_string(fd) +
                                        " is named more than once in the list: each fd is closed once (a second close of the number "
                                        "could close another fd that took it after the first); nothing was closed");
  }
  Napi::Object details = Napi::Object::New(env);
  details.Set("fd", Napi::Number::New(env, fd));
  details.Set("index", Napi::Number::New(env, static_cast<double>(std::find(fds.begin(), fds.end(), fd) - fds.begin())));
  throw Napi::Error(env, MakeError(env, "notclients", -EBADF, "closeClientFds", details));
}

inline int CheckFdResult(Napi::Env env, int r, const char* syscall) {
  if (r < 0) ThrowSystem(env, r, syscall);
  return r;
}

inline int ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  }
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v == floor(v)) || v < -2147483648.0 || v > 2147483647.0) {
    throw Napi::RangeError::New(info.Env(), std::string(what) + " must be a 32-bit integer");
  }
  return static_cast<int>(v);
}

inline int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  int fd = ArgInt(info, i, "fd");
  if (fd < 0) throw Napi::RangeError::New(info.Env(), "fd must be >= 0");
  return fd;
}

inline int ArgSockType(const Napi::CallbackInfo& info, size_t i) {
  int t = ArgInt(info, i, "type");
  if (t != SOCK_STREAM && t != SOCK_DGRAM && t != SOCK_SEQPACKET) {
    throw Napi::RangeError::New(info.Env(), "type must be SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET");
  }
  return t;
}

// An fd list given as an Int32Array: src/native.ts's fdList passes one
// from kIntArrayViaJs numbers on, once every entry is known to be an integer
// an int32 holds, so that it is read here in one copy instead of a
// napi_get_element per entry (about 65 ns each: 16 µs for a batch of 253).
// Its numbers (adjusted for the view's offset) and count; false for
// anything else, which the caller reads as an array. Callers copy before
// they check: the view's buffer may be shared with another thread.
inline bool Int32ListArg(const Napi::Value& v, const int32_t** data, size_t* n) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) return false;
  Napi::Int32Array list = v.As<Napi::Int32Array>();
  *data = list.Data();
  *n = list.ElementLength();
  return true;
}

// Reads an array of fds (numbers), or an Int32Array of them
// (Int32ListArg), into `out`, validating shape only: an Int32Array gets the
// same checks and errors as an array of the same numbers. The kernel (or
// dup) validates that each one is open.
inline void ArgFdList(const Napi::CallbackInfo& info, size_t i, std::vector<int>* out) {
  out->clear();
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) return;
  const int32_t* numbers;
  size_t count;
  if (Int32ListArg(info[i], &numbers, &count)) {
    if (count > kMaxFdsPerMessage) {
      throw Napi::RangeError::New(info.Env(), "at most 253 fds (SCM_MAX_FD) fit in one message");
    }
    out->assign(numbers, numbers + count);
    for (int fd : *out) {
      if (fd < -1) throw Napi::RangeError::New(info.Env(), "each fd must be an integer");
    }
    return;
  }
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

inline void ArgBytes(const Napi::CallbackInfo& info, size_t i, const char** data, size_t* len) {
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

inline std::string ArgName(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsString()) {
    throw Napi::TypeError::New(info.Env(), "name must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

// A socket name: a string (its UTF-8 bytes) or a Uint8Array/Buffer (its
// bytes as they are, for a name that is not UTF-8).
inline std::string ArgSockName(const Napi::CallbackInfo& info, size_t i) {
  if (i < info.Length() && info[i].IsTypedArray()) {
    Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
    if (ta.TypedArrayType() == napi_uint8_array) {
      Napi::Uint8Array u8 = ta.As<Napi::Uint8Array>();
      return std::string(reinterpret_cast<const char*>(u8.Data()), u8.ByteLength());
    }
  }
  if (i >= info.Length() || !info[i].IsString()) {
    throw Napi::TypeError::New(info.Env(), "name must be a string or a Uint8Array");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

// From this many numbers on, an array is made by one call into JavaScript
// (InstanceData::int_array) from an Int32Array filled with one copy: a
// napi_set_element per element costs about 87 ns here (22 µs for a batch of
// 253), the call about 6 µs for 253.
constexpr size_t kIntArrayViaJs = 16;

// A plain array of the numbers `v[0..n)` in *out; false (nothing pending)
// when no array could be made, as when the environment can no longer run
// JavaScript. Never throws: a frame channel's poll callback uses it too.
inline bool IntArrayValue(napi_env env, const int* v, size_t n, napi_value* out) {
  static_assert(sizeof(int) == sizeof(int32_t), "fd numbers are copied as int32");
  InstanceData* data = nullptr;
  if (n >= kIntArrayViaJs && napi_get_instance_data(env, reinterpret_cast<void**>(&data)) == napi_ok &&
      data != nullptr && !data->int_array.IsEmpty()) {
    void* bytes = nullptr;
    napi_value buf, list, count, global;
    if (napi_create_arraybuffer(env, n * sizeof(int32_t), &bytes, &buf) == napi_ok) {
      memcpy(bytes, v, n * sizeof(int32_t));
      if (napi_create_typedarray(env, napi_int32_array, n, buf, 0, &list) == napi_ok &&
          napi_create_uint32(env, static_cast<uint32_t>(n), &count) == napi_ok && napi_get_global(env, &global) == napi_ok) {
        napi_value args[2] = {list, count};
        if (napi_call_function(env, global, data->int_array.Value(), 2, args, out) == napi_ok) return true;
      }
    }
    // The JavaScript way failed (it cannot for a well-formed list unless
    // JavaScript cannot run at all): clear what it left and go element by
    // element, which fails the same way then.
    napi_value ignored;
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) napi_get_and_clear_last_exception(env, &ignored);
  }
  if (napi_create_array_with_length(env, n, out) != napi_ok) return false;
  for (size_t i = 0; i < n; i++) {
    napi_value e;
    if (napi_create_int32(env, v[i], &e) != napi_ok || napi_set_element(env, *out, static_cast<uint32_t>(i), e) != napi_ok) {
      return false;
    }
  }
  return true;
}

inline Napi::Array FdArray(Napi::Env env, const int* fds, size_t n) {
  napi_value arr;
  if (!IntArrayValue(env, fds, n, &arr)) NAPI_THROW_IF_FAILED(env, napi_pending_exception, Napi::Array());
  return Napi::Array(env, arr);
}

inline Napi::Value ReceiveError(Napi::Env env, const RecvResult& r, const char* syscall, const char* data = nullptr,
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

// Node refuses every Node-API call that may enter JS (NAPI_PREAMBLE) once
// the environment cannot run JS any more (or an exception is pending);
// napi_strict_equals is such a call, with no side effect. `value`: any
// value of the environment's (a wrap's object).
inline bool CanCallIntoJs(napi_env env, napi_value value) {
  bool equal = false;
  return value != nullptr && napi_strict_equals(env, value, value, &equal) == napi_ok;
}
template <typename T>
inline bool CanCallIntoJs(Napi::ObjectWrap<T>& wrap) {
  Napi::HandleScope scope(wrap.Env());  // callers may be outside any JS frame
  return CanCallIntoJs(wrap.Env(), wrap.Value());
}

// An exception a JS callback left pending becomes an uncaught exception, as
// for any event.
inline void RaisePendingException(napi_env env) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exception;
    if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) napi_fatal_exception(env, exception);
  }
}

// `receivers`: refused for the receivers an unbound DGRAM sender's queue
// waits for already (UnixSocket::kTooManyReceivers), not for its bytes.
[[noreturn]] inline void ThrowQueueFull(Napi::Env env, UnixSocket* core, const char* syscall, bool receivers = false) {
  Napi::Object details = Napi::Object::New(env);
  details.Set("queuedBytes", Napi::Number::New(env, static_cast<double>(core->queued_bytes())));
  details.Set("queuedMessages", Napi::Number::New(env, static_cast<double>(core->queued_sends())));
  details.Set("limit", Napi::Number::New(env, static_cast<double>(core->send_queue_limit())));
  if (receivers) {
    details.Set("waitingReceivers", Napi::Number::New(env, static_cast<double>(core->waiting_receivers())));
  }
  throw Napi::Error(env, MakeError(env, "queuefull", 0, syscall, details));
}

// fds[0..n), open and not registered as fdbridge's, go to this
// environment's JavaScript as numbers: the environment keeps them (closed at
// its teardown) until ClaimFromJs. Registered fds are left to the registry
// (their holder is the environment already, or whoever takes them). The main
// thread keeps nothing: its teardown is the process's exit (main_thread),
// and every received message would pay for the bookkeeping.
inline void KeepForJs(Napi::Env env, const int* fds, size_t n) {
  InstanceData* data = Data(env);
  if (data == nullptr || data->main_thread) return;
  for (size_t i = 0; i < n; i++) {
    if (fds[i] >= 0) data->unclaimed.insert(fds[i]);
  }
}
// The library takes fds[0..n) over (a native object, a close) or hands
// them on: the environment no longer keeps them. Any number may be given.
inline void ClaimFromJs(Napi::Env env, const int* fds, size_t n) {
  InstanceData* data = Data(env);
  if (data == nullptr || data->unclaimed.empty()) return;
  for (size_t i = 0; i < n; i++) data->unclaimed.erase(fds[i]);
}
// A native object of this environment takes fds[0..n) and closes them
// itself (close() or the cleanup hook): FdHeldByNative, and claimed.
inline void TakenByNative(Napi::Env env, const int* fds, size_t n) {
  FdHeldByNative(fds, n);
  ClaimFromJs(env, fds, n);
}

// A JS function that another thread calls once (or that is dropped), on the
// event loop of the environment that made it: a thread-safe function, which
// keeps that loop alive until then unless Unref'd. The environment's
// teardown (process exit, a worker's end) deletes a thread-safe function
// even while another thread still holds it, and the call may come after
// that: the finalizer, which runs before the delete, marks it gone under the
// lock Call takes, and a call after that does nothing.
class CallOnLoopOnce {
 public:
  CallOnLoopOnce(Napi::Env env, Napi::Function fn, const char* name) : state_(std::make_shared<State>()) {
    std::shared_ptr<State> state = state_;
    state_->tsfn = Napi::ThreadSafeFunction::New(env, fn, name, 0, 1, [state](Napi::Env) {
      std::lock_guard<std::mutex> lock(state->mu);
      state->gone = true;
    });
  }
  // The loop may end while the call is still to come.
  void Unref(Napi::Env env) const { state_->tsfn.Unref(env); }
  // From any thread: `call` (or, without one, the function with no
  // arguments) on the loop.
  void Call(std::function<void(Napi::Env, Napi::Function)> call = nullptr) const {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->gone) return;
    // napi_closing (the teardown has begun, the delete not yet) drops the call.
    if (call) {
      state_->tsfn.NonBlockingCall(std::move(call));
    } else {
      state_->tsfn.NonBlockingCall();
    }
    state_->tsfn.Release();
  }
  // On the environment's thread, instead of Call: it will not come.
  void Drop() const { state_->tsfn.Release(); }

 private:
  struct State {
    std::mutex mu;
    bool gone = false;
    Napi::ThreadSafeFunction tsfn;
  };
  std::shared_ptr<State> state_;
};

// What each file exports; InitModule (addon.cc) calls them in turn.
void ExportSocket(Napi::Env env, Napi::Object exports);           // addon_socket.cc
void ExportExitWatch(Napi::Env env, Napi::Object exports);        // addon_exit_watch.cc
void ExportFrameChannel(Napi::Env env, Napi::Object exports);     // addon_frame_channel.cc
void ExportFdBudget(Napi::Env env, Napi::Object exports);         // addon_fd_budget.cc
void ExportRelayPump(Napi::Env env, Napi::Object exports);        // addon_relay_pump.cc
void ExportEnvironment(Napi::Env env, Napi::Object exports);      // addon_env.cc
void ExportBackgroundCloses(Napi::Env env, Napi::Object exports); // addon_background_close.cc
void ExportFdFunctions(Napi::Env env, Napi::Object exports);      // addon_fd_functions.cc
void ExportSockFunctions(Napi::Env env, Napi::Object exports);    // addon_sock_functions.cc
void ExportFrameCodec(Napi::Env env, Napi::Object exports);       // addon_frame_codec.cc
void ExportLaneWriter(Napi::Env env, Napi::Object exports);       // addon_lane_writer.cc

// The environment's teardown (addon_env.cc), added by InitModule.
void AsyncCleanup(napi_async_cleanup_hook_handle handle, void* arg);

// What the bound classes give each other and the teardown.
UnixSocket* SocketCoreOf(Napi::Env env, Napi::Value value);  // SocketWrap::CoreOf
std::shared_ptr<FdBudget> FdBudgetOf(Napi::Env env, Napi::Value v);  // FdBudgetWrap::From
void DetachSocket(SocketWrap* s, void (*on_freed)(void*), void* arg);
void DetachExitWatch(ExitWatchWrap* w, void (*on_freed)(void*), void* arg);
void DetachRelayPump(RelayPumpWrap* p, void (*on_freed)(void*), void* arg);

}  // namespace fdbridge

#endif  // FDBRIDGE_ADDON_H_
