#include "loop_fds.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fd_ops.h"

namespace fdbridge {

namespace {

// Each handle is deleted as the type it was made with (deleting a uv_pipe_t
// through a uv_handle_t* is undefined: a sized delete of the wrong size).
template <typename Handle>
void FreeHandle(uv_handle_t* handle) {
  delete reinterpret_cast<Handle*>(handle);
}

void IgnoreEvent(uv_fs_event_t*, const char*, int, int) {}

}  // namespace

void WarmLoopFds(uv_loop_t* loop) {
  uv_pipe_t* pipe = new uv_pipe_t;
  if (uv_pipe_init(loop, pipe, 0) == 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(pipe), FreeHandle<uv_pipe_t>);
  } else {
    delete pipe;
  }
  uv_fs_event_t* watcher = new uv_fs_event_t;
  if (uv_fs_event_init(loop, watcher) == 0) {
    // Watching "/" adds an inotify watch, removed again by uv_fs_event_stop;
    // the inotify fd itself stays with the loop.
    if (uv_fs_event_start(watcher, IgnoreEvent, "/", 0) == 0) uv_fs_event_stop(watcher);
    uv_close(reinterpret_cast<uv_handle_t*>(watcher), FreeHandle<uv_fs_event_t>);
  } else {
    delete watcher;
  }
}

void LoopFds(uv_loop_t* loop, std::vector<int>* out) {
  // The fields are libuv's (uv/unix.h, UV_LOOP_PRIVATE_FIELDS and
  // UV_PLATFORM_LOOP_FIELDS on Linux), part of the struct's ABI in libuv 1.x.
  const int fds[] = {loop->backend_fd,    loop->signal_pipefd[0], loop->signal_pipefd[1],
                     loop->async_io_watcher.fd, loop->async_wfd, loop->emfile_fd,
                     loop->inotify_fd};
  for (int fd : fds) {
    bool seen = false;
    for (int o : *out) seen = seen || o == fd;
    if (fd >= 0 && !seen) out->push_back(fd);  // async_wfd is -1, or the eventfd itself on some versions
  }
}

void RingFdsNotOwned(std::vector<int>* out) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return;
  static const char kRing[] = "anon_inode:[io_uring]";
  char path[64];
  char target[sizeof(kRing) + 1];
  int own = dirfd(dir);
  while (struct dirent* e = readdir(dir)) {
    char* end = nullptr;
    long fd = strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == own) continue;
    snprintf(path, sizeof(path), "/proc/self/fd/%ld", fd);
    ssize_t n = readlink(path, target, sizeof(target));
    if (n != static_cast<ssize_t>(sizeof(kRing) - 1) || memcmp(target, kRing, n) != 0) continue;
    if (!FdIsOwned(static_cast<int>(fd))) out->push_back(static_cast<int>(fd));
  }
  closedir(dir);
}

}  // namespace fdbridge
