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

#include <string>
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
// `unsure` (pidfds as above) are processes that may not be ours: each is
// reaped if it exits within grace_ms, and is never signalled; the pidfds of
// those still running then are closed, the processes left alone. The fds do
// not wait for them.
//
// The fds are closed as kTeardownOwner's (fd_ops.h): the ended
// environment's own, on any shared thread of the closer. With no pidfds at
// all they go to the background closer at once. When
// no thread can be made (EAGAIN), the processes are killed (the unsure ones
// only reaped if they have exited) on the calling thread, then the fds go.
void ReapThenClose(std::vector<int> pidfds, std::vector<int> fds, int grace_ms, std::vector<int> unsure = {});

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
// a zombie. The teardown finds it among the thread's children instead: those
// the kernel lists (/proc/self/task/TID/children, children forked by that
// thread and not reaped) that it did not list when the window opened.
//
// Those are not all the spawn's: Node runs other code on the thread inside
// spawn() (async_hooks init hooks before the fork; the 'child_process'
// diagnostics channel's subscribers after it), and a library there may start
// a process of its own. So the spawn's process is told by a token: Open()
// draws 128 random bits (getrandom) and gives the environment entry
// NAME=TOKEN, which the spawn adds to the process's environment (and to
// nobody else's: never to this process's own); a new child whose
// /proc/PID/environ holds that exact entry is the spawn's. The entry is read
// from the block the kernel set up at execve, which a program's unsetenv()
// does not change, so the command may drop the variable for its own children.
// uv_spawn returns only once the exec succeeded, or after reaping a child
// whose exec failed: a live child never shows its parent's environment here.
//
// A new child whose environment reads empty or cannot be read could be the
// spawn's: it has exited or is exiting (its memory gone: a zombie reads
// empty), or it is a process we may not inspect (another uid's, not
// dumpable). It is only reaped if it exits within the grace, never
// signalled: this thread's loop, the only one that would reap it, is gone.
// A new child that shows an environment without the entry is someone
// else's and is left alone. A kernel without the children file
// (CONFIG_PROC_CHILDREN unset), or a getrandom that fails, leaves the
// process unwatched, as before the window existed.
class SpawnWindow {
 public:
  // Opens the window for a spawn by the calling thread (forgetting any open
  // one). Returns the environment entry NAME=TOKEN to give the spawned
  // process, or "" when the window cannot tell its process (then it takes
  // none).
  const std::string& Open();
  // Closes it: the spawn's process is watched, or there is none.
  void Close() { open_ = false; }
  // While the window is open and the thread that opened it lives: appends a
  // ChildPidfd of each process that thread forked since and has not reaped,
  // to *pidfds when its environment holds the entry, to *unsure when its
  // environment is empty or unreadable.
  void TakeSpawned(std::vector<int>* pidfds, std::vector<int>* unsure) const;

 private:
  bool open_ = false;
  bool listed_ = false;  // before_ is the thread's children when the window opened
  pid_t tid_ = 0;
  std::vector<pid_t> before_;
  std::string entry_;  // NAME=TOKEN; empty when the window takes nothing
};

// ReapThenClose calls whose processes are not all reaped, or whose fds are
// not yet handed to the background closer.
size_t ReapsPending();

}  // namespace fdbridge

#endif  // FDBRIDGE_CHILD_REAPER_H_
