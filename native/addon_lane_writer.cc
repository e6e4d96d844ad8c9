// The lanes of writer threads (lane_writer.h) seen from JS.
#include "addon.h"

#include <mutex>
#include <string>
#include <unordered_map>

#include "lane_writer.h"

namespace fdbridge {

namespace {

// The callbacks of the writes not done yet, by cancel group, so that
// laneWriteCancel can let the loop end without them: a write that the
// cancel cannot end (one inside write(2) into a terminal whose output is
// stopped, or a file on a hung filesystem) must not keep its environment
// alive (a helper daemon told to stop, a worker's teardown). Its callback
// still runs if the write ends while the loop lives. Never destroyed: a
// lane thread may finish a write after every environment has gone.
struct PendingWrites {
  std::mutex mu;
  uint64_t next = 1;
  // The environment whose laneWrite made each, beside its callback.
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, std::pair<napi_env, CallOnLoopOnce>>> by_group;
};

PendingWrites& Pending() {
  static PendingWrites* p = new PendingWrites();
  return *p;
}

// Takes `id` of `group` out of the pending writes; false if it was not there.
bool TakePending(uint64_t group, uint64_t id) {
  PendingWrites& p = Pending();
  auto it = p.by_group.find(group);
  if (it == p.by_group.end() || it->second.erase(id) == 0) return false;
  if (it->second.empty()) p.by_group.erase(it);
  return true;
}

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
  const uint64_t g = static_cast<uint64_t>(group);
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(Pending().mu);
    id = Pending().next++;
    Pending().by_group[g].emplace(id, std::make_pair(static_cast<napi_env>(env), callback));
  }
  int r = LaneWrite(fd, std::move(data), static_cast<uint64_t>(owner), g, [callback, g, id](int64_t result) {
    {
      // Out of the pending writes before the call: a cancel on the loop
      // then either unrefs it first or no longer sees it.
      std::lock_guard<std::mutex> lock(Pending().mu);
      TakePending(g, id);
    }
    callback.Call([result](Napi::Env env, Napi::Function cb) { cb.Call({Napi::Number::New(env, static_cast<double>(result))}); });
  });
  if (r < 0) {
    {
      std::lock_guard<std::mutex> lock(Pending().mu);
      TakePending(g, id);
    }
    callback.Drop();
    ThrowSystem(env, r, "dup");
  }
  return env.Undefined();
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
  LaneWriteCancel(static_cast<uint64_t>(group));
  std::lock_guard<std::mutex> lock(Pending().mu);
  auto it = Pending().by_group.find(static_cast<uint64_t>(group));
  if (it != Pending().by_group.end()) {
    for (auto& [id, made] : it->second) {
      if (made.first == static_cast<napi_env>(env)) made.second.Unref(env);
    }
  }
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

}  // namespace

void ExportLaneWriter(Napi::Env env, Napi::Object exports) {
  exports.Set("laneWrite", Napi::Function::New<LaneWriteJs>(env, "laneWrite"));
  exports.Set("laneGroup", Napi::Function::New<LaneGroupJs>(env, "laneGroup"));
  exports.Set("laneWriteCancel", Napi::Function::New<LaneWriteCancelJs>(env, "laneWriteCancel"));
  exports.Set("laneWriters", Napi::Function::New<LaneWritersJs>(env, "laneWriters"));
}

}  // namespace fdbridge
