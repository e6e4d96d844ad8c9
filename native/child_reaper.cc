#include "child_reaper.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <utility>

#include "fd_ops.h"
#include "syscall_numbers.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace fdbridge {

namespace {

struct ReapJob {
  std::vector<int> pidfds;
  std::vector<int> fds;
  int grace_ms;
  std::vector<int> unsure;
};

// The variable that carries a spawn's token (SpawnWindow).
constexpr char kSpawnTokenVar[] = "FDBRIDGE_SPAWN_TOKEN";
constexpr size_t kSpawnTokenBytes = 16;

std::atomic<size_t> g_pending{0};

// A reaper thread waits in poll(2) and waitid(2): a small stack is plenty.
constexpr size_t kReaperStack = 256 * 1024;
// The reaper threads' name (at most 15 characters), set by each as it starts.
constexpr const char* kReaperThreadName = "fdbridge-reap";

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Reaps the process of `pidfd` (blocking until it exits) and closes the pidfd.
void Reap(int pidfd) {
  siginfo_t info;
  while (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) < 0 && errno == EINTR) {
  }
  // ECHILD: reaped already (by Node, before its handle was closed).
  FdClose(pidfd);
}

void Run(ReapJob& job) {
  std::vector<int>& left = job.pidfds;
  std::vector<int>& unsure = job.unsure;
  int64_t deadline = NowMs() + job.grace_ms;
  bool fds_handed = false;
  // A pidfd is readable once its process has exited (pidfd_open(2)).
  for (;;) {
    if (left.empty() && !fds_handed) {
      if (!job.fds.empty()) FdCloseInBackground(job.fds.data(), job.fds.size(), kTeardownOwner, /*held_for_peer=*/false);
      fds_handed = true;
    }
    if (left.empty() && unsure.empty()) break;
    // Polled at least once, with no wait when the grace is spent (or none was
    // given): a process that has exited is reaped, never signalled.
    int64_t wait = std::max<int64_t>(deadline - NowMs(), 0);
    std::vector<struct pollfd> polled;
    for (int fd : left) polled.push_back({fd, POLLIN, 0});
    for (int fd : unsure) polled.push_back({fd, POLLIN, 0});
    int n = poll(polled.data(), polled.size(), static_cast<int>(wait));
    if (n < 0 && errno != EINTR) break;
    std::vector<int> running;
    std::vector<int> unsure_running;
    for (size_t i = 0; i < polled.size(); i++) {
      if (n > 0 && polled[i].revents != 0) {
        Reap(polled[i].fd);
      } else {
        (i < left.size() ? running : unsure_running).push_back(polled[i].fd);
      }
    }
    left.swap(running);
    unsure.swap(unsure_running);
    if (wait == 0) break;
  }
  for (int pidfd : left) {
    // Through the pidfd: never another process that took a recycled pid.
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
    Reap(pidfd);
  }
  // Possibly someone else's, and still running: left alone.
  for (int pidfd : unsure) FdClose(pidfd);
  if (!fds_handed && !job.fds.empty()) FdCloseInBackground(job.fds.data(), job.fds.size(), kTeardownOwner, /*held_for_peer=*/false);
  g_pending--;
}

// Reads the whole of a /proc file into *text: 0, or -errno.
int ReadProcFile(const std::string& path, std::string* text) {
  int fd;
  {
    // open(2) takes the lowest free number, one the caller may have closed
    // and still name: moved above the floor before any fdbridge path can
    // look at it.
    OwnedFdsLock lock;
    while ((fd = open(path.c_str(), O_RDONLY | O_CLOEXEC)) < 0 && errno == EINTR) {  // installed: FdOwnHigh below
    }
    fd = FdOwnHigh(fd < 0 ? -errno : fd);
  }
  if (fd < 0) return fd;
  char buf[4096];
  int result = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) result = -errno;
    if (n <= 0) break;
    text->append(buf, static_cast<size_t>(n));
  }
  FdClose(fd);
  return result;
}

// The pids of the children thread `tid` of this process forked and nobody
// has reaped (exited ones included: a zombie stays on its parent's list
// until reaped). false when the kernel does not provide the list.
bool ThreadChildren(pid_t tid, std::vector<pid_t>* out) {
  std::string text;
  if (ReadProcFile("/proc/self/task/" + std::to_string(tid) + "/children", &text) < 0) return false;
  pid_t pid = 0;
  bool in_number = false;
  for (char c : text) {
    if (c >= '0' && c <= '9') {
      pid = pid * 10 + (c - '0');
      in_number = true;
    } else {
      if (in_number) out->push_back(pid);
      pid = 0;
      in_number = false;
    }
  }
  if (in_number) out->push_back(pid);
  return true;
}

void* ReaperThread(void* arg) {
  pthread_setname_np(pthread_self(), kReaperThreadName);  // for /proc/<pid>/task/*/comm
  ReapJob* job = static_cast<ReapJob*>(arg);
  Run(*job);
  delete job;
  return nullptr;
}

}  // namespace

int ChildPidfd(pid_t pid) {
  int pidfd;
  {
    OwnedFdsLock lock;  // made and registered as one step
    pidfd = FdOwnHigh(PidfdOpen(pid));
  }
  if (pidfd >= 0) FdHeldByNative(&pidfd, 1);
  return pidfd;
}

const std::string& SpawnWindow::Open() {
  open_ = true;
  tid_ = static_cast<pid_t>(syscall(SYS_gettid));
  before_.clear();
  entry_.clear();
  listed_ = ThreadChildren(tid_, &before_);
  if (!listed_) return entry_;
  unsigned char token[kSpawnTokenBytes];
  size_t got = 0;
  while (got < sizeof token) {
    ssize_t n = getrandom(token + got, sizeof token - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      listed_ = false;  // no token: no process can be told apart
      return entry_;
    }
    got += static_cast<size_t>(n);
  }
  static const char kHex[] = "0123456789abcdef";
  entry_ = std::string(kSpawnTokenVar) + "=";
  for (unsigned char b : token) {
    entry_ += kHex[b >> 4];
    entry_ += kHex[b & 15];
  }
  return entry_;
}

void SpawnWindow::TakeSpawned(std::vector<int>* pidfds, std::vector<int>* unsure) const {
  if (!open_ || !listed_) return;
  std::vector<pid_t> now;
  if (!ThreadChildren(tid_, &now)) return;
  for (pid_t pid : now) {
    if (std::find(before_.begin(), before_.end(), pid) != before_.end()) continue;
    // Unreaped, and nobody else reaps it: the pid names this process until
    // the pidfd holds it, and the pidfd, opened first, makes sure the
    // environment read below is that process's.
    int pidfd = ChildPidfd(pid);
    if (pidfd < 0) continue;
    std::string environ;
    if (ReadProcFile("/proc/" + std::to_string(pid) + "/environ", &environ) < 0 || environ.empty()) {
      unsure->push_back(pidfd);
      continue;
    }
    // NUL-separated NAME=VALUE entries; the last one may lack its NUL.
    bool ours = false;
    for (size_t at = 0; at < environ.size() && !ours;) {
      size_t end = environ.find('\0', at);
      if (end == std::string::npos) end = environ.size();
      ours = environ.compare(at, end - at, entry_) == 0;
      at = end + 1;
    }
    if (ours) {
      pidfds->push_back(pidfd);
    } else {
      FdClose(pidfd);  // someone else's
    }
  }
}

void ReapThenClose(std::vector<int> pidfds, std::vector<int> fds, int grace_ms, std::vector<int> unsure) {
  if (pidfds.empty() && unsure.empty()) {
    if (!fds.empty()) FdCloseInBackground(fds.data(), fds.size(), kTeardownOwner, /*held_for_peer=*/false);
    return;
  }
  g_pending++;
  ReapJob* job = new ReapJob{std::move(pidfds), std::move(fds), grace_ms, std::move(unsure)};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, kReaperStack);
  pthread_t t;
  int r = pthread_create(&t, &attr, ReaperThread, job);
  pthread_attr_destroy(&attr);
  if (r != 0) {
    // No thread: no grace either (this thread cannot wait that long).
    job->grace_ms = 0;
    Run(*job);
    delete job;
  }
}

size_t ReapsPending() { return g_pending.load(); }

}  // namespace fdbridge
