// The registry of worker threads' wake-ups (thread_wake.h).
#include "thread_wake.h"

#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <mutex>
#include <unordered_map>

#include "fd_ops.h"

namespace fdbridge {

namespace {

struct Entry {
  int fd = -1;  // the eventfd, once made
  uint64_t registration = 0;
  FdIdentity identity{};
  bool woken = false;
};

// Leaked on purpose: a thread may still end (and unregister) while static
// destructors run at the process's exit.
std::mutex& Mu() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}
std::unordered_map<uint64_t, Entry>& Entries() {
  static auto* entries = new std::unordered_map<uint64_t, Entry>;
  return *entries;
}

// The calling thread's registration (0: none) and its eventfd as last made
// (-1: none), read by its own waits without the lock: only this thread makes
// it or lets it go, and only its environment's end closes it.
thread_local uint64_t t_thread_id = 0;
thread_local int t_fd = -1;

// Makes it readable; under Mu(), only while it is still ours.
void SignalLocked(Entry* e) {
  if (e->fd < 0) return;
  if (!FdStillHeld(e->fd, e->registration, &e->identity)) {
    e->fd = -1;  // closed behind our back: not ours to write or close
    return;
  }
  eventfd_write(e->fd, 1);  // EAGAIN only at a counter of 2^64 - 2: readable anyway
}

}  // namespace

void WakeRegisterThread(uint64_t thread_id) {
  std::lock_guard<std::mutex> lock(Mu());
  Entries().emplace(thread_id, Entry{});
  t_thread_id = thread_id;
  t_fd = -1;
}

void WakeUnregisterThread(uint64_t thread_id) {
  std::lock_guard<std::mutex> lock(Mu());
  auto it = Entries().find(thread_id);
  if (it == Entries().end()) return;
  Entry e = it->second;
  Entries().erase(it);
  if (t_thread_id == thread_id) {
    t_thread_id = 0;
    t_fd = -1;
  }
  // Closed under the lock: no WakeThread can write to the number meanwhile.
  // An eventfd's close has no flush to wait on.
  if (e.fd >= 0) FdCloseHeld(e.fd, e.registration, &e.identity);
}

bool WakeThisThreadRegistered() { return t_thread_id != 0; }

int WakeFdOfThisThread() {
  if (t_thread_id == 0) return -1;
  if (t_fd >= 0) return t_fd;
  std::lock_guard<std::mutex> lock(Mu());
  auto it = Entries().find(t_thread_id);
  if (it == Entries().end()) return -1;
  Entry& e = it->second;
  int fd;
  {
    OwnedFdsLock owned;  // made and registered as one step
    int made = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);  // installed: FdOwnHigh below
    fd = FdOwnHigh(made < 0 ? -errno : made);
  }
  if (fd < 0) return -1;
  FdHeldByNative(&fd, 1);  // closed by WakeUnregisterThread, not the holder's release
  e.fd = fd;
  e.registration = FdRegistration(fd);
  if (FdFileIdentity(fd, &e.identity) != 0) e.identity = FdIdentity{};
  // A wake that came before the eventfd existed.
  if (e.woken) SignalLocked(&e);
  t_fd = fd;
  return fd;
}

bool WakeThisThreadWoken() {
  std::lock_guard<std::mutex> lock(Mu());
  auto it = Entries().find(t_thread_id);
  if (it == Entries().end()) return false;
  Entry& e = it->second;
  if (e.woken) return true;
  if (e.fd >= 0 && FdStillHeld(e.fd, e.registration, &e.identity)) {
    eventfd_t count;
    eventfd_read(e.fd, &count);  // non-blocking; a WakeThread writes again under this lock
  } else {
    e.fd = -1;
    t_fd = -1;
  }
  return false;
}

bool WakeThread(uint64_t thread_id) {
  std::lock_guard<std::mutex> lock(Mu());
  auto it = Entries().find(thread_id);
  if (it == Entries().end()) return false;
  it->second.woken = true;
  SignalLocked(&it->second);
  return true;
}

void WakeAllThreads() {
  std::lock_guard<std::mutex> lock(Mu());
  for (auto& entry : Entries()) {
    entry.second.woken = true;
    SignalLocked(&entry.second);
  }
}

}  // namespace fdbridge
