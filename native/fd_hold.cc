#include "fd_hold.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "syscall_numbers.h"
#include "unique_fd.h"

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

namespace fdbridge {

namespace {

// One hold: its thread, and what it and the thread that made it tell each
// other (under mu).
struct HoldThread {
  enum State { kOpening, kHolding, kFailed, kReleasing, kReleased };

  // Set before the thread starts.
  pid_t pid = 0;  // whose fds: /proc/<pid>/fd
  std::vector<int> fds;
  uint64_t owner = 0;

  std::mutex mu;
  std::condition_variable cv;
  State state = kOpening;
  int err = 0;             // kFailed: -errno
  pid_t tid = 0;           // the thread's id, once kHolding
  std::vector<int> refs;   // the reference for fds[i] in the thread's table, or -1
  pthread_t thread{};
};

void SetState(HoldThread* h, HoldThread::State state) {
  std::lock_guard<std::mutex> lock(h->mu);
  h->state = state;
  h->cv.notify_all();
}

void WaitWhile(HoldThread* h, HoldThread::State state) {
  std::unique_lock<std::mutex> lock(h->mu);
  h->cv.wait(lock, [&] { return h->state != state; });
}

// The hold's thread. Every signal is blocked (inherited from its maker).
void* HoldMain(void* arg) {
  pthread_setname_np(pthread_self(), "fdbridge-hold");  // for /proc/<pid>/task/*/comm
  HoldThread* h = static_cast<HoldThread*>(arg);
  // A table of its own, empty: with the range past the highest open number,
  // CLOSE_RANGE_UNSHARE copies none of the shared table's entries.
  if (syscall(SYS_close_range, 0U, ~0U, CLOSE_RANGE_UNSHARE) != 0) {
    std::lock_guard<std::mutex> lock(h->mu);
    h->err = -errno;
    h->state = HoldThread::kFailed;
    h->cv.notify_all();
    return nullptr;
  }
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd", static_cast<int>(h->pid));
  int err = 0;
  std::vector<int> refs(h->fds.size(), -1);
  // Plain open and close here, never UniqueFd/FdClose: those consult the
  // registry of the process's own numbers, and these numbers are of
  // another table.
  int links = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);  // another table: this thread's own (CLOSE_RANGE_UNSHARE)
  if (links < 0) err = -errno;
  for (size_t i = 0; err == 0 && i < h->fds.size(); i++) {
    char name[16];
    snprintf(name, sizeof(name), "%d", h->fds[i]);
    refs[i] = openat(links, name, O_PATH | O_CLOEXEC);  // another table: this thread's own (CLOSE_RANGE_UNSHARE)
    // Closed since, or not ours to open: not held. No room (EMFILE,
    // ENFILE, ENOMEM): the hold as a whole fails.
    if (refs[i] < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM)) err = -errno;
  }
  if (links >= 0) close(links);
  if (err != 0) {
    syscall(SYS_close_range, 0U, ~0U, 0U);
    std::lock_guard<std::mutex> lock(h->mu);
    h->err = err;
    h->state = HoldThread::kFailed;
    h->cv.notify_all();
    return nullptr;
  }
  {
    std::unique_lock<std::mutex> lock(h->mu);
    h->refs = std::move(refs);
    h->tid = static_cast<pid_t>(syscall(SYS_gettid));
    h->state = HoldThread::kHolding;
    h->cv.notify_all();
    h->cv.wait(lock, [&] { return h->state == HoldThread::kReleasing; });
  }
  // Drops every reference: each last fput is queued as task work, run
  // before this call returns to the thread, so before kReleased is seen.
  syscall(SYS_close_range, 0U, ~0U, 0U);
  SetState(h, HoldThread::kReleased);
  return nullptr;
}

// The holds alive in this process (worker threads share this library's one
// copy of the addon): id -> hold. Never destroyed: an environment's teardown
// may run at process exit.
struct Registry {
  std::mutex mu;
  uint64_t last = 0;
  std::unordered_map<uint64_t, std::unique_ptr<HoldThread>> live;
};

Registry& TheRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

// Starts `h`'s thread (StartQuietThread). 0 or -errno.
int StartHoldThread(HoldThread* h) { return StartQuietThread(&h->thread, HoldMain, h); }

// Ends a holding (or failed) hold's thread and joins it.
void EndHoldThread(HoldThread* h) {
  {
    std::unique_lock<std::mutex> lock(h->mu);
    if (h->state == HoldThread::kHolding) {
      h->state = HoldThread::kReleasing;
      h->cv.notify_all();
      h->cv.wait(lock, [&] { return h->state == HoldThread::kReleased; });
    }
  }
  pthread_join(h->thread, nullptr);
}

}  // namespace

int FdHoldFiles(pid_t pid, const int* fds, size_t n, uint64_t owner, FdHold* hold, std::vector<std::string>* held) {
  held->assign(n, std::string());
  auto h = std::make_unique<HoldThread>();
  h->pid = pid <= 0 ? getpid() : pid;
  h->fds.assign(fds, fds + n);
  h->owner = owner;
  int r = StartHoldThread(h.get());
  if (r < 0) return r;
  WaitWhile(h.get(), HoldThread::kOpening);
  if (h->state == HoldThread::kFailed) {
    r = h->err;
    EndHoldThread(h.get());
    return r;
  }
  // The file each reference holds, read from our side (the thread's table
  // needs no entry for it).
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/task/%d/fdinfo", static_cast<int>(h->tid));
  UniqueFd info;
  {
    OwnedFdsLock lock;  // opened and its install noted as one step
    info.reset(FdInstalled(open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
  }
  if (!info) {
    r = -errno;
    EndHoldThread(h.get());
    return r;
  }
  for (size_t i = 0; i < n; i++) {
    if (h->refs[i] < 0) continue;
    char name[16];
    snprintf(name, sizeof(name), "%d", h->refs[i]);
    std::string file;
    if (FdReadFileId(info.get(), name, &file) == 0) (*held)[i] = std::move(file);
  }
  Registry& reg = TheRegistry();
  std::lock_guard<std::mutex> lock(reg.mu);
  hold->id = ++reg.last;
  hold->tid = h->tid;
  reg.live.emplace(hold->id, std::move(h));
  return 0;
}

int FdReleaseHold(const FdHold& hold) {
  std::unique_ptr<HoldThread> h;
  {
    Registry& reg = TheRegistry();
    std::lock_guard<std::mutex> lock(reg.mu);
    auto it = reg.live.find(hold.id);
    if (it == reg.live.end()) return -ESTALE;
    h = std::move(it->second);
    reg.live.erase(it);
  }
  EndHoldThread(h.get());
  return 0;
}

void FdReleaseHoldsOf(uint64_t owner) {
  std::vector<std::unique_ptr<HoldThread>> mine;
  {
    Registry& reg = TheRegistry();
    std::lock_guard<std::mutex> lock(reg.mu);
    for (auto it = reg.live.begin(); it != reg.live.end();) {
      if (it->second->owner == owner) {
        mine.push_back(std::move(it->second));
        it = reg.live.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& h : mine) EndHoldThread(h.get());
}

size_t FdLiveHoldCount() {
  Registry& reg = TheRegistry();
  std::lock_guard<std::mutex> lock(reg.mu);
  return reg.live.size();
}

}  // namespace fdbridge
