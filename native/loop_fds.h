// fds that libuv opens lazily, once per event loop, and keeps until the loop
// is closed. Uses libuv, no Node-API.
#ifndef FDBRIDGE_LOOP_FDS_H_
#define FDBRIDGE_LOOP_FDS_H_

#include <uv.h>

#include <vector>

namespace fdbridge {

// Makes `loop` open now what it would otherwise open on first use, so that
// an fd-table baseline taken afterwards already holds it:
// - the EMFILE reserve: uv__stream_init opens /dev/null (or "/") the first
//   time a pipe, TCP or TTY handle is made on a loop (loop->emfile_fd), and
//   keeps it to accept-and-drop a connection at EMFILE. Node makes one for
//   process.stdout when it is a pipe or a TTY, not when it is a file: under
//   `> file`, unwarmed, the first child process spawned would open it and
//   look like a leak.
// - the inotify fd: the first uv_fs_event_start (fs.watch) opens it
//   (loop->inotify_fd) and it stays after the last watcher stops.
// Both are left as libuv wants them; the handles made here own no fd and
// are closed (and freed by libuv's close callback). Errors are ignored: a
// loop that cannot open them now would not have later either.
void WarmLoopFds(uv_loop_t* loop);

// Appends to *out the fds `loop` holds for itself now: its epoll fd, its
// signal pipe, its async wakeup fd (an eventfd, or a pipe), and the EMFILE
// reserve and the inotify fd once opened. A worker thread's loop opens
// the first ones as the thread starts, at the lowest free numbers, and
// closes them as it ends (uv_loop_close), after the thread's code is done.
// io_uring rings (libuv 1.45+ gives each loop one as it starts, where the
// kernel allows) are not reachable through the loop: see RingFdsNotOwned.
void LoopFds(uv_loop_t* loop, std::vector<int>* out);

// Appends to *out the io_uring fds (anon_inode:[io_uring] in /proc/self/fd)
// that fdbridge has not registered as its own: a worker thread's loop
// opened its ring as the thread started, at the lowest free number. The
// main loop's rings, open since before any caller code ran, are among them
// the first time; none of them is ever the caller's to name.
void RingFdsNotOwned(std::vector<int>* out);

}  // namespace fdbridge

#endif  // FDBRIDGE_LOOP_FDS_H_
