// Reaping the child processes of an environment that is gone. Plain POSIX:
// no Node-API, no libuv.
//
// Node reaps a child process through the event loop of the thread that
// spawned it (libuv's SIGCHLD handling waits for the pids of its own process
// handles, never for others). A worker thread that is torn down closes its
// process handles without waiting for them, and no other loop will: every
// command process it started stays a zombie, for the life of this process,
// once it exits. The environment's teardown hands them to a reaper instead.
#ifndef FDBRIDGE_CHILD_REAPER_H_
#define FDBRIDGE_CHILD_REAPER_H_

#include <stddef.h>
#include <sys/types.h>

#include <vector>

namespace fdbridge {

// How long a child is given to exit by itself (a command process exits once
// its socket is closed) before the reaper sends it SIGKILL: the time a
// connection's close() gives it too.
constexpr int kReapGraceMs = 5000;

// Takes pidfds (each one's process a child of this process, the pidfds ours
// and registered) and fds (ours, registered, held for nobody): on a thread of
// its own, waits for every process to exit (SIGKILL to those still running
// after grace_ms), reaps it (waitid P_PIDFD; one that Node reaped already is
// ECHILD, and the pidfd makes sure no other process is ever waited for), and
// closes its pidfd; then hands `fds` to the background closer. The fds wait
// for the processes because a process may still name them: a pidfd command
// pulls the pins of the requests it reads, by number (pidfd_getfd), until it
// exits.
//
// With no pidfds the fds go to the background closer at once. When no
// thread can be made (EAGAIN), the processes are killed and reaped on the
// calling thread, then the fds go.
void ReapThenClose(std::vector<int> pidfds, std::vector<int> fds, int grace_ms);

// pidfd_open(pid), numbered at or above the fd floor, registered as ours and
// held by native code (for ReapThenClose, or to close once Node has reaped
// the process): the fd, or -errno.
int ChildPidfd(pid_t pid);

// A spawn in progress on one thread, from just before the fork until the new
// process is watched (a pidfd of it held for the environment's teardown).
// The JavaScript that spawns can be stopped anywhere in that window: a
// worker's terminate() takes effect at its next function call, and requested
// during the fork (which, under load, takes milliseconds: libuv waits for
// the exec) right after it returns. Node then closes the process's handle
// without waiting for it and the watch never comes, so the process would stay
// a zombie. The teardown takes it from the thread's children instead: those
// the kernel lists (/proc/self/task/TID/children, children forked by that
// thread and not reaped) that it did not list when the window opened.
// Between the two only that spawn forks on the thread, and its loop, the
// only one that reaps its children, is gone: what differs is the spawn's
// process, never someone else's. A kernel without that file
// (CONFIG_PROC_CHILDREN unset) leaves the process unwatched, as before.
class SpawnWindow {
 public:
  // Opens the window for a spawn by the calling thread (forgetting any open one).
  void Open();
  // Closes it: the spawn's process is watched, or there is none.
  void Close() { open_ = false; }
  // While the window is open and the thread that opened it lives: appends to
  // *pidfds a ChildPidfd of each process that thread forked since and has
  // not reaped.
  void TakeSpawned(std::vector<int>* pidfds) const;

 private:
  bool open_ = false;
  bool listed_ = false;  // before_ is the thread's children when the window opened
  pid_t tid_ = 0;
  std::vector<pid_t> before_;
};

// ReapThenClose calls whose processes are not all reaped, or whose fds are
// not yet handed to the background closer.
size_t ReapsPending();

}  // namespace fdbridge

#endif  // FDBRIDGE_CHILD_REAPER_H_
