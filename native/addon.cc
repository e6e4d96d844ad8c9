// The module's entry point: loads once per environment, makes the
// environment's instance data and its teardown hook, and collects each
// file's exports (addon_*.cc; the shared helpers are in addon.h).
#include "addon.h"

#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>

#include "fd_ops.h"
#include "sock_ops.h"
#include "unix_socket.h"

namespace fdbridge {

// Threads of this addon outlive the environment that started them: the
// background closers, the lane writers, and the child reaper (up to its
// grace after a worker ends). Node dlcloses an addon when the last environment that loaded it
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
  data->main_thread = syscall(SYS_gettid) == getpid();
  FdSetThreadHolder(data->holder);
  env.SetInstanceData<InstanceData>(data);
  napi_add_async_cleanup_hook(env, AsyncCleanup, data, &data->cleanup_handle);

  ExportSocket(env, exports);
  ExportExitWatch(env, exports);
  ExportFrameChannel(env, exports);
  ExportFdBudget(env, exports);
  ExportRelayPump(env, exports);
  ExportEnvironment(env, exports);
  ExportBackgroundCloses(env, exports);
  ExportFdFunctions(env, exports);
  ExportSockFunctions(env, exports);
  ExportFrameCodec(env, exports);
  ExportLaneWriter(env, exports);

  Napi::Object constants = Napi::Object::New(env);
  constants.Set("SOCK_STREAM", Napi::Number::New(env, SOCK_STREAM));
  constants.Set("SOCK_DGRAM", Napi::Number::New(env, SOCK_DGRAM));
  constants.Set("SOCK_SEQPACKET", Napi::Number::New(env, SOCK_SEQPACKET));
  constants.Set("SHUT_RD", Napi::Number::New(env, SHUT_RD));
  constants.Set("SHUT_WR", Napi::Number::New(env, SHUT_WR));
  constants.Set("SHUT_RDWR", Napi::Number::New(env, SHUT_RDWR));
  constants.Set("MAX_FDS_PER_MESSAGE", Napi::Number::New(env, static_cast<double>(kMaxFdsPerMessage)));
  constants.Set("INT_ARRAY_VIA_JS", Napi::Number::New(env, static_cast<double>(kIntArrayViaJs)));
  constants.Set("MAX_SOCKET_PATH_BYTES", Napi::Number::New(env, static_cast<double>(kMaxSocketPathBytes)));
  exports.Set("constants", constants);
  return exports;
}

}  // namespace fdbridge

static Napi::Object Init(Napi::Env env, Napi::Object exports) { return fdbridge::InitModule(env, exports); }

NODE_API_MODULE(NODE_GYP_MODULE_NAME, Init)
