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

// ReapThenClose calls whose processes are not all reaped, or whose fds are
// not yet handed to the background closer.
size_t ReapsPending();

}  // namespace fdbridge

#endif  // FDBRIDGE_CHILD_REAPER_H_
