#include "child_reaper.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <utility>

#include "fd_ops.h"

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace fdbridge {

namespace {

struct ReapJob {
  std::vector<int> pidfds;
  std::vector<int> fds;
  int grace_ms;
};

std::atomic<size_t> g_pending{0};

// A reaper thread waits in poll(2) and waitid(2): a small stack is plenty.
constexpr size_t kReaperStack = 256 * 1024;

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
  int64_t deadline = NowMs() + job.grace_ms;
  // A pidfd is readable once its process has exited (pidfd_open(2)).
  while (!left.empty()) {
    int64_t wait = deadline - NowMs();
    if (wait <= 0) break;
    std::vector<struct pollfd> polled;
    for (int fd : left) polled.push_back({fd, POLLIN, 0});
    int n = poll(polled.data(), polled.size(), static_cast<int>(wait));
    if (n < 0 && errno != EINTR) break;
    std::vector<int> running;
    for (const struct pollfd& p : polled) {
      if (p.revents != 0) {
        Reap(p.fd);
      } else {
        running.push_back(p.fd);
      }
    }
    left.swap(running);
  }
  for (int pidfd : left) {
    // Through the pidfd: never another process that took a recycled pid.
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
    Reap(pidfd);
  }
  if (!job.fds.empty()) FdCloseInBackground(job.fds.data(), job.fds.size(), 0, /*held_for_peer=*/false);
  g_pending--;
}

void* ReaperThread(void* arg) {
  ReapJob* job = static_cast<ReapJob*>(arg);
  Run(*job);
  delete job;
  return nullptr;
}

}  // namespace

void ReapThenClose(std::vector<int> pidfds, std::vector<int> fds, int grace_ms) {
  if (pidfds.empty()) {
    if (!fds.empty()) FdCloseInBackground(fds.data(), fds.size(), 0, /*held_for_peer=*/false);
    return;
  }
  g_pending++;
  ReapJob* job = new ReapJob{std::move(pidfds), std::move(fds), grace_ms};
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
