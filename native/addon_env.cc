// The per-environment registry and its teardown: the instance data's end,
// the async cleanup hook, and the functions that register what an
// environment holds (init's error factory, its loop's fds, its children).
#include "addon.h"
#include "message_batch.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "child_reaper.h"
#include "fd_hold.h"
#include "fd_ops.h"
#include "loop_fds.h"
#include "thread_wake.h"

namespace fdbridge {

namespace {

// testHoldTeardown's wait: one byte out on `fd`, then one byte in (poll
// first: the socket may be non-blocking).
void HoldForTest(int fd) {
  char c = 'h';
  while (write(fd, &c, 1) < 0 && errno == EINTR) {
  }
  struct pollfd p = {fd, POLLIN, 0};
  while (poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
  while (read(fd, &c, 1) < 0 && errno == EINTR) {
  }
}

}  // namespace

InstanceData::~InstanceData() {
  if (wake_thread_id != 0) WakeUnregisterThread(wake_thread_id);
  for (; closed_by_others_watches > 0; closed_by_others_watches--) FdWatchClosedByOthers(false);
  FdCheckThreadExitFds();  // before libuv closes this thread's loop fds
  for (uint64_t start : loop_starts) FdLoopStartEnd(start);
  FdReleaseHoldsOf(holder);  // a leak check's holds (a worker terminated mid-check)
  std::vector<int> held;
  FdReleaseHolder(holder, &held);
  // Numbers handed to JavaScript that never reached their owner (the
  // JavaScript was stopped in between): nobody else knows them. One that is
  // registered meanwhile is the registry's (released above, or a native
  // object's), never closed twice. (The main thread keeps none: KeepForJs.)
  for (int fd : unclaimed) {
    if (!FdIsOwned(fd)) held.push_back(fd);
  }
  unclaimed.clear();
  std::vector<int> pidfds;
  for (const auto& child : children) {
    // One the program closed behind our back is not ours to wait on or close.
    const WatchedChild& c = child.second;
    if (FdStillHeld(c.pidfd, c.registration, &c.identity)) pidfds.push_back(c.pidfd);
  }
  std::vector<int> unsure;
  spawning.TakeSpawned(&pidfds, &unsure);
  ReapThenClose(std::move(pidfds), std::move(held), kReapGraceMs, std::move(unsure));
  if (hold_teardown_fd >= 0) HoldForTest(hold_teardown_fd);
}

// ---------------------------------------------------------------------------
// Environment teardown (a worker thread exiting, or the process): close every
// socket still open, and let Node wait until libuv has closed the poll handles
// (a worker's loop may not be closed with live handles).

namespace {

void OnSocketFreedDuringCleanup(void* arg) {
  InstanceData* data = static_cast<InstanceData*>(arg);
  if (--data->closing == 0 && data->cleanup_handle != nullptr) {
    napi_async_cleanup_hook_handle h = data->cleanup_handle;
    data->cleanup_handle = nullptr;
    napi_remove_async_cleanup_hook(h);
  }
}

}  // namespace

void AsyncCleanup(napi_async_cleanup_hook_handle handle, void* arg) {
  InstanceData* data = static_cast<InstanceData*>(arg);
  std::vector<SocketWrap*> open(data->sockets.begin(), data->sockets.end());
  std::vector<ExitWatchWrap*> watches(data->watches.begin(), data->watches.end());
  std::vector<RelayPumpWrap*> pumps(data->pumps.begin(), data->pumps.end());
  data->closing = open.size() + watches.size() + pumps.size() + (data->batch != nullptr ? 1 : 0);
  if (data->closing == 0) {
    data->cleanup_handle = nullptr;
    napi_remove_async_cleanup_hook(handle);
    return;
  }
  for (SocketWrap* s : open) DetachSocket(s, OnSocketFreedDuringCleanup, data);
  for (ExitWatchWrap* w : watches) DetachExitWatch(w, OnSocketFreedDuringCleanup, data);
  for (RelayPumpWrap* p : pumps) DetachRelayPump(p, OnSocketFreedDuringCleanup, data);
  if (data->batch != nullptr) {
    MessageBatch* batch = data->batch;
    data->batch = nullptr;
    batch->Close(OnSocketFreedDuringCleanup, data);
  }
}

namespace {

Napi::Value Init(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "init(makeError, intArray?)");
  Data(info.Env())->make_error = Napi::Persistent(info[0].As<Napi::Function>());
  if (info.Length() >= 2 && info[1].IsFunction()) Data(info.Env())->int_array = Napi::Persistent(info[1].As<Napi::Function>());
  return info.Env().Undefined();
}

// setMessageBatchHandler(dispatcher): sockets made with { batch: true } hand
// their messages to dispatcher(count, handlers, data, meta) once per loop
// turn, all together (native/message_batch.h); a later call replaces it.
Napi::Value SetMessageBatchHandler(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "setMessageBatchHandler(dispatcher)");
  InstanceData* data = Data(env);
  if (data->batch != nullptr) {
    data->batch->SetDispatcher(info[0]);
    return env.Undefined();
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) throw Napi::Error::New(env, "setMessageBatchHandler: no event loop");
  int err = 0;
  data->batch = MessageBatch::Create(env, loop, info[0], &err);
  if (data->batch == nullptr) ThrowSystem(env, err, "setMessageBatchHandler");
  return env.Undefined();
}

// wakeRegisterThread(threadId): this environment is worker thread
// `threadId`'s (worker_threads.threadId, non-zero): its waits on itself
// (dupFileDescriptorSync) poll its wake-up from now on, and wakeThread ends
// them; the registration ends with the environment.
Napi::Value WakeRegisterThreadFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t id = info.Length() > 0 ? static_cast<uint64_t>(WholeNumber(info[0])) : 0;
  InstanceData* data = Data(env);
  if (id == 0 || data->main_thread) throw Napi::RangeError::New(env, "wakeRegisterThread: a worker thread's threadId");
  // A second copy of the library in the environment loads the same addon.
  if (data->wake_thread_id == id) return env.Undefined();
  if (data->wake_thread_id != 0) throw Napi::Error::New(env, "wakeRegisterThread: this environment is registered under another threadId");
  WakeRegisterThread(id);
  data->wake_thread_id = id;
  return env.Undefined();
}

// wakeThread(threadId) -> boolean: ends worker thread `threadId`'s waits on
// itself, now and from then on (worker.terminate(): its JavaScript is
// stopping); false when no such thread is registered.
Napi::Value WakeThreadFn(const Napi::CallbackInfo& info) {
  uint64_t id = info.Length() > 0 ? static_cast<uint64_t>(WholeNumber(info[0])) : 0;
  return Napi::Boolean::New(info.Env(), id != 0 && WakeThread(id));
}

// wakeAllThreads(): wakeThread of every registered worker thread (the
// process exits: Node stops and joins each worker).
Napi::Value WakeAllThreadsFn(const Napi::CallbackInfo& info) {
  WakeAllThreads();
  return info.Env().Undefined();
}

// ownLoopFds(start = 0): registers the fds the calling thread's event loop
// holds (LoopFds, and its io_uring rings: LoopRingFds, or where those
// cannot be told apart every ring nobody registered, RingFdsNotOwned)
// as fdbridge's, until this thread exits, after libuv has closed them
// (FdUnregisterAtThreadExit), and ends the loop start `start`
// (loopStartBegins) as the same step. For a worker thread fdbridge starts
// (the worker transport): its loop's fds are opened at the lowest free
// numbers, where a number the caller closed may be, and libuv keeps them
// there; registered, a caller naming one is refused (EBADF). Returns how
// many fds were registered; -1, with nothing registered and the start not
// ended, when one of them opened at the number of a libuv stream of
// fdbridge's still to close it (the program closed the stream's fd behind
// its back while the thread started, after the start put its placeholders:
// FdLoopStartBegin): that stream's close would close the loop's fd under
// it. The thread must then end, its loop's fds closed with it, and another
// start be made.
Napi::Value OwnLoopFds(const Napi::CallbackInfo& info) {
  uint64_t start = info.Length() > 0 && !info[0].IsUndefined() ? static_cast<uint64_t>(WholeNumber(info[0])) : 0;
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(info.Env(), &loop) != napi_ok || loop == nullptr) return info.Env().Undefined();
  std::vector<int> fds;
  {
    OwnedFdsLock lock;  // registered and the start ended as one step
    LoopFds(loop, &fds);
    std::vector<int> rings;
    if (!LoopRingFds(loop, &rings)) RingFdsNotOwned(&rings);
    for (int fd : rings) {
      if (std::find(fds.begin(), fds.end(), fd) == fds.end()) fds.push_back(fd);
    }
    for (int fd : fds) {
      if (FdAwaitsRuntimeClose(fd)) return Napi::Number::New(info.Env(), -1);
    }
    FdMarkOwnedInPlace(fds.data(), fds.size());  // a number someone closed behind a fd of ours is taken over
    FdHeldByNative(fds.data(), fds.size());  // libuv closes them, nobody else
    FdUnregisterAtThreadExit(fds.data(), fds.size());
    if (start != 0) FdLoopStartEnd(start);
  }
  return Napi::Number::New(info.Env(), static_cast<double>(fds.size()));
}

// loopStartBegins() -> start: this thread is about to start a worker thread
// whose loop's fds it will have registered (ownLoopFds(start) there); until
// then, or loopStartEnds(start) once that thread is gone, a number a caller
// names is refused when it could be one of them (FdLoopStartBegin).
Napi::Value LoopStartBegins(const Napi::CallbackInfo& info) {
  uint64_t start = FdLoopStartBegin();
  Data(info.Env())->loop_starts.push_back(start);
  return Napi::Number::New(info.Env(), static_cast<double>(start));
}

Napi::Value LoopStartEnds(const Napi::CallbackInfo& info) {
  double start = info.Length() > 0 ? WholeNumber(info[0]) : -1;
  if (start < 0) throw Napi::TypeError::New(info.Env(), "loopStartEnds(start): start must be what loopStartBegins returned");
  FdLoopStartEnd(static_cast<uint64_t>(start));
  std::vector<uint64_t>& mine = Data(info.Env())->loop_starts;
  mine.erase(std::remove(mine.begin(), mine.end(), static_cast<uint64_t>(start)), mine.end());
  return info.Env().Undefined();
}

// loopStartsOpen() -> loop starts not ended, in the process.
Napi::Value LoopStartsOpen(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdLoopStartsOpen()));
}

// testHoldTeardown(fd): for a test, this environment's teardown, once done
// (just before Node closes its event loop), writes one byte to the socket
// `fd` and waits until one comes back. The socket stays the test's.
Napi::Value TestHoldTeardown(const Napi::CallbackInfo& info) {
  Data(info.Env())->hold_teardown_fd = ArgFd(info, 0);
  return info.Env().Undefined();
}

// warmLoop(): the calling thread's event loop opens now the fds it would
// open lazily and keep (WarmLoopFds).
Napi::Value WarmLoop(const Napi::CallbackInfo& info) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(info.Env(), &loop) == napi_ok && loop != nullptr) WarmLoopFds(loop);
  return info.Env().Undefined();
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
  InstanceData* data = Data(info.Env());
  data->spawning.Close();
  int pidfd = ChildPidfd(pid);  // closed by unwatchChild or the reaper
  if (pidfd < 0) return Napi::Number::New(info.Env(), 0);
  InstanceData::WatchedChild watched{pidfd, FdRegistration(pidfd), {}};
  if (FdFileIdentity(pidfd, &watched.identity) != 0) watched.registration = 0;  // not open: cannot be
  uint32_t id = ++data->next_child;
  if (id == 0) id = ++data->next_child;
  data->children.emplace(id, watched);
  return Napi::Number::New(info.Env(), id);
}

// spawnBegins() -> "NAME=TOKEN" or "": this thread is about to spawn a
// process it will watch (watchChild, which ends the spawn; spawnEnds() when
// there is no process), with that entry added to the process's environment:
// should its environment end in between, the teardown reaps the process all
// the same, told from other children by the entry (SpawnWindow).
Napi::Value SpawnBegins(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), Data(info.Env())->spawning.Open());
}

Napi::Value SpawnEnds(const Napi::CallbackInfo& info) {
  Data(info.Env())->spawning.Close();
  return info.Env().Undefined();
}

Napi::Value UnwatchChild(const Napi::CallbackInfo& info) {
  double id = info.Length() > 0 ? WholeNumber(info[0]) : -1;
  if (id < 0 || id > 4294967295.0) throw Napi::TypeError::New(info.Env(), "unwatchChild(id): id must be what watchChild returned");
  InstanceData* data = Data(info.Env());
  auto it = data->children.find(static_cast<uint32_t>(id));
  if (it != data->children.end()) {
    // Left alone when the program closed it behind our back (the number is
    // another fd now, or none): the close of that fd is not ours.
    FdCloseHeld(it->second.pidfd, it->second.registration, &it->second.identity);
    data->children.erase(it);
  }
  return info.Env().Undefined();
}

// reapsPending() -> environments' teardowns still waiting for their child
// processes (ReapsPending).
Napi::Value ReapsPendingFn(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(ReapsPending()));
}

}  // namespace

void ExportEnvironment(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New<Init>(env, "init"));
  exports.Set("setMessageBatchHandler", Napi::Function::New<SetMessageBatchHandler>(env, "setMessageBatchHandler"));
  exports.Set("ownLoopFds", Napi::Function::New<OwnLoopFds>(env, "ownLoopFds"));
  exports.Set("loopStartBegins", Napi::Function::New<LoopStartBegins>(env, "loopStartBegins"));
  exports.Set("loopStartEnds", Napi::Function::New<LoopStartEnds>(env, "loopStartEnds"));
  exports.Set("loopStartsOpen", Napi::Function::New<LoopStartsOpen>(env, "loopStartsOpen"));
  exports.Set("testHoldTeardown", Napi::Function::New<TestHoldTeardown>(env, "testHoldTeardown"));
  exports.Set("warmLoop", Napi::Function::New<WarmLoop>(env, "warmLoop"));
  exports.Set("spawnBegins", Napi::Function::New<SpawnBegins>(env, "spawnBegins"));
  exports.Set("spawnEnds", Napi::Function::New<SpawnEnds>(env, "spawnEnds"));
  exports.Set("watchChild", Napi::Function::New<WatchChild>(env, "watchChild"));
  exports.Set("unwatchChild", Napi::Function::New<UnwatchChild>(env, "unwatchChild"));
  exports.Set("reapsPending", Napi::Function::New<ReapsPendingFn>(env, "reapsPending"));
  exports.Set("wakeRegisterThread", Napi::Function::New<WakeRegisterThreadFn>(env, "wakeRegisterThread"));
  exports.Set("wakeThread", Napi::Function::New<WakeThreadFn>(env, "wakeThread"));
  exports.Set("wakeAllThreads", Napi::Function::New<WakeAllThreadsFn>(env, "wakeAllThreads"));
}

}  // namespace fdbridge
