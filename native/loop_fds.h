// fds that libuv opens lazily, once per event loop, and keeps until the loop
// is closed. Uses libuv, no Node-API.
#ifndef FDBRIDGE_LOOP_FDS_H_
#define FDBRIDGE_LOOP_FDS_H_

#include <uv.h>

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

}  // namespace fdbridge

#endif  // FDBRIDGE_LOOP_FDS_H_
