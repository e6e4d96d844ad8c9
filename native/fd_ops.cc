#include "fd_ops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "unique_fd.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

namespace fdbridge {

namespace {

struct OwnedFds {
  std::recursive_mutex mu;
  // fd -> the generation of its registration (never 0).
  std::unordered_map<int, uint64_t> gens;
  uint64_t next_gen = 0;
  // Read without the lock by FdClose: a process that holds none of its own
  // fds (most callers' most of the time) closes without taking it.
  std::atomic<size_t> count{0};
};

OwnedFds& TheOwnedFds() {
  static OwnedFds* owned = new OwnedFds();  // never destroyed: worker threads may close fds during exit
  return *owned;
}

void MarkOwnedLocked(OwnedFds& o, int fd) {
  if (o.gens.emplace(fd, ++o.next_gen).second) o.count.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

OwnedFdsLock::OwnedFdsLock() { TheOwnedFds().mu.lock(); }
OwnedFdsLock::~OwnedFdsLock() { TheOwnedFds().mu.unlock(); }

int FdRefuseOwned(const int* fds, size_t n) {
  OwnedFds& o = TheOwnedFds();
  if (o.count.load(std::memory_order_relaxed) == 0) return 0;
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) {
    if (o.gens.count(fds[i]) != 0) return -EBADF;
  }
  return 0;
}

void FdMarkOwned(const int* fds, size_t n) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) MarkOwnedLocked(o, fds[i]);
}

void FdDisown(int fd) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  if (o.gens.erase(fd) != 0) o.count.fetch_sub(1, std::memory_order_relaxed);
}

size_t FdOwnedCount() { return TheOwnedFds().count.load(std::memory_order_relaxed); }

bool FdIsOwned(int fd) {
  OwnedFds& o = TheOwnedFds();
  if (o.count.load(std::memory_order_relaxed) == 0) return false;
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  return o.gens.count(fd) != 0;
}

int FdDupCloexec(int fd) {
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return r < 0 ? -errno : r;
}

namespace {

std::atomic<int> g_floor{-1};
// The highest floor seen. While the floor is below it (the soft limit was
// lowered, e.g. by a test of what happens at the limit), it is read again
// on every use, so that it comes back up as soon as the limit does; a
// process whose limit never drops pays nothing.
std::atomic<int> g_highest_floor{-1};

int ComputeFloor() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rlim_t half = rl.rlim_cur == RLIM_INFINITY ? static_cast<rlim_t>(kFdFloorCap) : rl.rlim_cur / 2;
  int floor = half < static_cast<rlim_t>(kFdFloorCap) ? static_cast<int>(half) : kFdFloorCap;
  if (floor > g_highest_floor.load(std::memory_order_relaxed)) g_highest_floor.store(floor, std::memory_order_relaxed);
  g_floor.store(floor, std::memory_order_relaxed);
  return floor;
}

// Duplicates each fd at or above `start`, all or none: the duplicates are
// owned here until every one is made.
int DupAllFrom(const int* fds, size_t n, int start, int* out) {
  UniqueFds made;
  made.reserve(n);
  for (size_t i = 0; i < n; i++) {
    UniqueFd d(fcntl(fds[i], F_DUPFD_CLOEXEC, start));
    if (!d) return -errno;
    made.push_back(std::move(d));
  }
  made.release_into(out);
  return 0;
}

int DupAllHighUnregistered(const int* fds, size_t n, int min_fd, int* out);

}  // namespace

int FdFloor() {
  int floor = g_floor.load(std::memory_order_relaxed);
  return floor >= 0 && floor >= g_highest_floor.load(std::memory_order_relaxed) ? floor : ComputeFloor();
}

int FdDupHigh(int fd) {
  int out;
  int r = FdDupAllHigh(&fd, 1, 0, &out);
  return r < 0 ? r : out;
}

int FdDupAllHigh(const int* fds, size_t n, int min_fd, int* out) {
  OwnedFdsLock lock;  // made and registered as one step
  int r = DupAllHighUnregistered(fds, n, min_fd, out);
  if (r == 0) FdMarkOwned(out, n);
  return r;
}

namespace {

int DupAllHighUnregistered(const int* fds, size_t n, int min_fd, int* out) {
  int floor = FdFloor();
  int r = DupAllFrom(fds, n, min_fd > floor ? min_fd : floor, out);
  // EINVAL: the start is at or above the soft limit. The limit was lowered
  // since the floor was read, or the list holds an fd just under the limit.
  if (r != -EINVAL) return r;
  // Either way, start again from the floor, having checked every fd first
  // so that none of our duplicates can stand in for a closed one further on.
  floor = ComputeFloor();
  for (size_t i = 0; i < n; i++) {
    if (fcntl(fds[i], F_GETFD) < 0) return -errno;
  }
  return DupAllFrom(fds, n, floor, out);
}

}  // namespace

int FdClose(int fd) {
  OwnedFds& o = TheOwnedFds();
  uint64_t gen = 0;
  if (o.count.load(std::memory_order_relaxed) != 0) {
    std::lock_guard<std::recursive_mutex> lock(o.mu);
    auto it = o.gens.find(fd);
    if (it != o.gens.end()) gen = it->second;
  }
  // Unregistered only after the close: until then the number is ours, and
  // a caller naming it must still be refused. (Between the two a number
  // just opened by another thread may be refused once; never is one of
  // ours accepted.)
  int r = close(fd) == 0 || errno == EINTR ? 0 : -errno;
  if (gen != 0) {
    std::lock_guard<std::recursive_mutex> lock(o.mu);
    auto it = o.gens.find(fd);
    if (it != o.gens.end() && it->second == gen) {
      o.gens.erase(it);
      o.count.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  return r;
}

namespace {

// The background closer: one thread for the process, started on first use
// and never joined (it holds no resources but the queue; at exit the kernel
// closes whatever is left). One thread keeps closes in order; a close that
// blocks delays the ones behind it, never the event loop.
struct Closer {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<UniqueFd, bool>> queue;  // (fd, held_for_peer)
  std::atomic<size_t> pending{0};
  std::atomic<size_t> pending_peer_fds{0};
  uint64_t enqueued = 0;  // under mu: tickets are handed out in queue order
  std::atomic<uint64_t> done{0};
  // Under mu: what to run once `done` reaches each ticket. Registering reads
  // `done` under mu and the thread raises it before taking mu to look here,
  // so a waiter is either run at once or seen by the close that reaches it.
  std::multimap<uint64_t, std::function<void()>> waiters;
};

Closer& TheCloser() {
  static Closer* closer = [] {
    Closer* c = new Closer();  // never destroyed: the thread may outlive static destructors
    std::thread([c] {
      for (;;) {
        UniqueFd fd;
        bool peer_fd;
        {
          std::unique_lock<std::mutex> lock(c->mu);
          c->cv.wait(lock, [c] { return !c->queue.empty(); });
          fd = std::move(c->queue.front().first);
          peer_fd = c->queue.front().second;
          c->queue.pop_front();
        }
        fd.reset();  // the close that may block, outside the lock
        uint64_t done = ++c->done;
        if (peer_fd) c->pending_peer_fds--;
        c->pending--;
        std::vector<std::function<void()>> ready;
        {
          std::lock_guard<std::mutex> lock(c->mu);
          auto end = c->waiters.upper_bound(done);
          for (auto it = c->waiters.begin(); it != end; ++it) ready.push_back(std::move(it->second));
          c->waiters.erase(c->waiters.begin(), end);
        }
        for (auto& then : ready) then();
      }
    }).detach();
    return c;
  }();
  return *closer;
}

}  // namespace

uint64_t FdCloseInBackground(int fd, bool held_for_peer) {
  Closer& c = TheCloser();
  if (fd < 0) {
    std::lock_guard<std::mutex> lock(c.mu);
    return c.enqueued;  // nothing to wait for beyond what is queued already
  }
  c.pending++;
  if (held_for_peer) c.pending_peer_fds++;
  uint64_t ticket;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.queue.emplace_back(UniqueFd(fd), held_for_peer);
    ticket = ++c.enqueued;
  }
  c.cv.notify_one();
  return ticket;
}

void FdAfterBackgroundCloses(uint64_t ticket, std::function<void()> then) {
  Closer& c = TheCloser();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.done.load() < ticket) {
      c.waiters.emplace(ticket, std::move(then));
      return;
    }
  }
  then();
}

size_t FdBackgroundClosesPending() { return TheCloser().pending.load(); }

size_t FdBackgroundClosesOfPeerFds() { return TheCloser().pending_peer_fds.load(); }

uint64_t FdBackgroundClosesDone() { return TheCloser().done.load(); }

int PollNow(int fd, short events) {
  struct pollfd p = {fd, events, 0};
  int r;
  do {
    r = poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  return r > 0 ? p.revents : 0;
}

int FdPollReadable(const int* fds, size_t n, std::vector<bool>* out) {
  std::vector<struct pollfd> p(n);
  for (size_t i = 0; i < n; i++) p[i] = {fds[i], POLLIN, 0};
  int r;
  do {
    r = poll(p.data(), p.size(), 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  out->assign(n, false);
  for (size_t i = 0; i < n; i++) (*out)[i] = (p[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) != 0;
  return r;
}

int FdIdentityOf(int fd, FdIdentity* out) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  out->dev = static_cast<uint64_t>(st.st_dev);
  out->ino = static_cast<uint64_t>(st.st_ino);
  out->mode = static_cast<uint32_t>(st.st_mode);
  return 0;
}

int FdGetFlags(int fd) {
  int fdflags = fcntl(fd, F_GETFD);
  if (fdflags < 0) return -errno;
  int flflags = fcntl(fd, F_GETFL);
  if (flflags < 0) return -errno;
  return ((fdflags & FD_CLOEXEC) ? 1 : 0) | ((flflags & O_NONBLOCK) ? 2 : 0);
}

int FdSetCloexec(int fd, bool on) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return -errno;
  int next = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (next != flags && fcntl(fd, F_SETFD, next) != 0) return -errno;
  return 0;
}

int FdSetNonblock(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -errno;
  int next = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (next != flags && fcntl(fd, F_SETFL, next) != 0) return -errno;
  return 0;
}

int FdList(pid_t pid, std::vector<FdEntry>* out) {
  char dir_path[64];
  if (pid == getpid()) pid = 0;  // our own table: leave our directory stream out
  if (pid <= 0) {
    snprintf(dir_path, sizeof(dir_path), "/proc/self/fd");
  } else {
    snprintf(dir_path, sizeof(dir_path), "/proc/%d/fd", static_cast<int>(pid));
  }
  DIR* dir = opendir(dir_path);  // glibc opens it O_CLOEXEC
  if (dir == nullptr) return -errno;
  // Our own directory stream shows up in /proc/self/fd; it is not part of the
  // table we were asked about.
  int self_dir_fd = pid <= 0 ? dirfd(dir) : -1;
  out->clear();
  for (;;) {
    // readdir signals an error only through errno; the readlink below may
    // leave its own errno behind, so clear it before every call.
    errno = 0;
    struct dirent* ent = readdir(dir);
    if (ent == nullptr) break;
    if (ent->d_name[0] == '.') continue;
    char* end = nullptr;
    long n = strtol(ent->d_name, &end, 10);
    if (end == ent->d_name || *end != '\0') continue;
    if (static_cast<int>(n) == self_dir_fd) continue;
    char link_path[sizeof(dir_path) + sizeof(ent->d_name) + 2];
    snprintf(link_path, sizeof(link_path), "%s/%s", dir_path, ent->d_name);
    char target[4096];
    ssize_t len = readlink(link_path, target, sizeof(target) - 1);
    // The fd may close between readdir and readlink (another thread): skip it.
    if (len < 0) continue;
    target[len] = '\0';
    out->push_back(FdEntry{static_cast<int>(n), std::string(target, len)});
  }
  int err = errno;  // 0 at the end of the directory
  closedir(dir);
  return err != 0 ? -err : 0;
}

int FdGetLimit(uint64_t* soft, uint64_t* hard) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -errno;
  *soft = static_cast<uint64_t>(rl.rlim_cur);
  *hard = static_cast<uint64_t>(rl.rlim_max);
  return 0;
}

int FdSetLimit(uint64_t soft, uint64_t hard) {
  struct rlimit rl;
  rl.rlim_cur = static_cast<rlim_t>(soft);
  rl.rlim_max = static_cast<rlim_t>(hard);
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return -errno;
  ComputeFloor();
  return 0;
}

int FdPipe(int out[2]) {
  if (pipe2(out, O_CLOEXEC) != 0) return -errno;
  return 0;
}

int FdMemfd(const char* name) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

int FdEventfd() {
  int fd = eventfd(0, EFD_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

int PidfdOpen(pid_t pid) {
  long r = syscall(SYS_pidfd_open, pid, 0);
  return r < 0 ? -errno : static_cast<int>(r);
}

int PidfdGetfd(int pidfd, int target_fd) {
  long r = syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);
  return r < 0 ? -errno : static_cast<int>(r);
}

int FdOwnHigh(int fd) {
  if (fd < 0) return fd;
  OwnedFdsLock lock;  // held by the caller already; taken again (recursive) to keep the promise here
  if (fd >= FdFloor()) {
    FdMarkOwned(&fd, 1);
    return fd;
  }
  UniqueFd low(fd);  // released once its copy above the floor exists (or not)
  return FdDupHigh(low.get());
}

int PidfdGetfdHigh(int pidfd, int target_fd) {
  OwnedFdsLock lock;  // made and registered as one step
  return FdOwnHigh(PidfdGetfd(pidfd, target_fd));
}

}  // namespace fdbridge
