// The lanes of writer threads (lane_writer.h) seen from JS.
#include "addon.h"

#include <string>
#include <vector>

#include "lane_writer.h"

namespace fdbridge {

namespace {

// laneWrite(fd, data: Uint8Array, owner, group, callback(result)): writes
// all of data into a copy of fd on a thread of owner's lane (lane_writer.h).
// callback runs on this thread's event loop once the copy is closed, with
// the bytes written or -errno (-ECANCELED: laneWriteCancel(group)). The
// thread-safe function that carries it keeps the loop alive meanwhile,
// until laneWriteCancel(group) lets it go (CallOnLoopOnce: the write may
// end after this environment's teardown).
// Throws a SystemError when the copy cannot be made (EBADF, EMFILE).
Napi::Value LaneWriteJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[1].IsTypedArray() || !info[4].IsFunction()) {
    throw Napi::TypeError::New(env, "laneWrite(fd, data: Uint8Array, owner, group, callback)");
  }
  int fd = ArgInt(info, 0, "fd");
  double owner = WholeNumber(info[2]);
  double group = WholeNumber(info[3]);
  if (fd < 0) throw Napi::RangeError::New(env, "laneWrite: fd must be non-negative");
  if (owner < 0 || group <= 0) throw Napi::TypeError::New(env, "laneWrite: owner must be a non-negative integer and group one laneGroup() gave");
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) throw Napi::TypeError::New(env, "laneWrite: data must be a Uint8Array");
  Napi::Uint8Array bytes = ta.As<Napi::Uint8Array>();
  std::string data(reinterpret_cast<const char*>(bytes.Data()), bytes.ByteLength());
  CallOnLoopOnce callback(env, info[4].As<Napi::Function>(), "laneWrite");
  // A cancel from this environment lets its loop end without the callback
  // (see laneWriteCancel); never after the callback has begun (LaneWrite).
  napi_env made_by = env;
  int r = LaneWrite(
      fd, std::move(data), static_cast<uint64_t>(owner), static_cast<uint64_t>(group),
      [callback](int64_t result) {
        callback.Call([result](Napi::Env env, Napi::Function cb) { cb.Call({Napi::Number::New(env, static_cast<double>(result))}); });
      },
      [callback, made_by](const void* by) {
        if (by == made_by) callback.Unref(Napi::Env(made_by));
      });
  if (r < 0) {
    callback.Drop();
    ThrowSystem(env, r, "dup");
  }
  return env.Undefined();
}

// laneTargetRefusal(fd) -> 0 when the lanes write into fd, else -errno
// (LaneTargetRefusal: EBADF, EISDIR, EINVAL).
Napi::Value LaneTargetRefusalJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  if (fd < 0) throw Napi::RangeError::New(env, "laneTargetRefusal: fd must be non-negative");
  return Napi::Number::New(env, LaneTargetRefusal(fd));
}

// laneGroup() -> a new cancel group for laneWrite.
Napi::Value LaneGroupJs(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(LaneNewGroup()));
}

// laneWriteCancel(group): ends the group's writes (lane_writer.h), and
// lets the loop end without their callbacks: one inside a write(2) that
// does not return (a stopped terminal) does not keep it alive. Each
// callback still comes if its write ends while the loop runs. Only this
// environment's callbacks are let go (a thread-safe function is unref'd
// on its own loop's thread).
Napi::Value LaneWriteCancelJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double group = info.Length() > 0 ? WholeNumber(info[0]) : -1;
  if (group <= 0) throw Napi::TypeError::New(env, "laneWriteCancel(group): a group laneGroup() gave");
  LaneWriteCancel(static_cast<uint64_t>(group), static_cast<napi_env>(env));
  return env.Undefined();
}

// laneWriters() -> { threads, busy, queued, owners, perOwner }.
Napi::Value LaneWritersJs(const Napi::CallbackInfo& info) {
  size_t threads, busy, queued, owners;
  LaneWriterStats(&threads, &busy, &queued, &owners);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("threads", Napi::Number::New(info.Env(), static_cast<double>(threads)));
  o.Set("busy", Napi::Number::New(info.Env(), static_cast<double>(busy)));
  o.Set("queued", Napi::Number::New(info.Env(), static_cast<double>(queued)));
  o.Set("owners", Napi::Number::New(info.Env(), static_cast<double>(owners)));
  o.Set("perOwner", Napi::Number::New(info.Env(), static_cast<double>(kLaneThreadsPerOwner)));
  return o;
}

// laneWriterFds() -> the numbers of the fds the lanes hold now (LaneWriterFds).
Napi::Value LaneWriterFdsJs(const Napi::CallbackInfo& info) {
  std::vector<int> fds = LaneWriterFds();
  Napi::Array a = Napi::Array::New(info.Env(), fds.size());
  for (size_t i = 0; i < fds.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), fds[i]));
  return a;
}

}  // namespace

void ExportLaneWriter(Napi::Env env, Napi::Object exports) {
  exports.Set("laneWrite", Napi::Function::New<LaneWriteJs>(env, "laneWrite"));
  exports.Set("laneTargetRefusal", Napi::Function::New<LaneTargetRefusalJs>(env, "laneTargetRefusal"));
  exports.Set("laneGroup", Napi::Function::New<LaneGroupJs>(env, "laneGroup"));
  exports.Set("laneWriteCancel", Napi::Function::New<LaneWriteCancelJs>(env, "laneWriteCancel"));
  exports.Set("laneWriters", Napi::Function::New<LaneWritersJs>(env, "laneWriters"));
  exports.Set("laneWriterFds", Napi::Function::New<LaneWriterFdsJs>(env, "laneWriterFds"));
}

}  // namespace fdbridge
