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

// Appends to *out the io_uring fds of `loop` (libuv 1.45+ gives a loop a
// ring as it starts, where the kernel allows, and may make a second one
// for file operations): a worker thread's loop opens them as the thread
// starts, at the lowest free numbers. libuv does not say which ring is
// whose: the loop's private fields (loop->internal_fields, one allocation
// of its own) hold pointers into its rings' shared mappings, and
// /proc/self/maps names the inode each mapping belongs to; every ring has
// an inode of its own (anon_inode_create_getfile) on the kernels that say
// so, which fstat of a ring fd gives. So the rings are this loop's exactly:
// another thread's ring, the main loop's, a caller's own, is never taken
// for it. Returns false, appending nothing, when that cannot be told: the
// kernel gives every ring the one shared anon inode (older kernels), two
// open fds share a ring's inode, or /proc cannot be read. Only the memory
// of that allocation is read (malloc_usable_size).
bool LoopRingFds(uv_loop_t* loop, std::vector<int>* out);

// Appends to *out the io_uring fds (anon_inode:[io_uring] in /proc/self/fd)
// that fdbridge has not registered as its own: where LoopRingFds cannot
// tell a loop's rings, every ring nobody registered, this loop's among
// them. That registers, for as long as the calling thread lives, rings
// that are other threads' (the main loop's, another worker's, a caller's
// own): a caller naming one is refused (EBADF) meanwhile, and one whose
// loop ends first stays registered until this thread does (its number,
// taken again by a new fd, is refused too); a ring of another fdbridge
// worker registered here leaves the registry when this thread ends, while
// that worker may still run. Never closed through the registry either way
// (held by native code: libuv closes each ring with its loop).
void RingFdsNotOwned(std::vector<int>* out);

}  // namespace fdbridge

#endif  // FDBRIDGE_LOOP_FDS_H_
