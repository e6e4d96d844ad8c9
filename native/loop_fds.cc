#include "loop_fds.h"

#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <vector>

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

namespace {

constexpr char kRing[] = "anon_inode:[io_uring]";

// The io_uring fds open in the process now (FdList: /proc/self/fd).
// False when /proc/self/fd cannot be read.
bool RingFdNumbers(std::vector<int>* out) {
  std::vector<FdEntry> table;
  if (FdList(0, &table) != 0) return false;
  for (const FdEntry& e : table) {
    if (e.target == kRing) out->push_back(e.fd);
  }
  return true;
}

// RingFdNumbers, each with its inode (FdFileIdentity: the number may hold
// another file by the time it is read).
bool RingFds(std::vector<std::pair<int, ino_t>>* out) {
  std::vector<int> fds;
  if (!RingFdNumbers(&fds)) return false;
  for (int fd : fds) {
    FdIdentity file;
    if (FdFileIdentity(fd, &file) == 0) out->emplace_back(fd, static_cast<ino_t>(file.ino));
  }
  return true;
}

struct RingMapping {
  uintptr_t start;
  uintptr_t end;
  ino_t inode;
};

// The io_uring mappings of the process (/proc/self/maps lines naming
// anon_inode:[io_uring]). False when the file cannot be read.
bool RingMappings(std::vector<RingMapping>* out) {
  FILE* maps = fopen("/proc/self/maps", "re");
  if (maps == nullptr) return false;
  char line[512];
  while (fgets(line, sizeof(line), maps) != nullptr) {
    if (strstr(line, kRing) == nullptr) continue;
    unsigned long start, end, inode;
    // start-end perms offset dev inode path
    if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &start, &end, &inode) == 3) out->push_back({start, end, static_cast<ino_t>(inode)});
  }
  fclose(maps);
  return true;
}

}  // namespace

bool LoopRingFds(uv_loop_t* loop, std::vector<int>* out) {
  std::vector<std::pair<int, ino_t>> rings;
  std::vector<RingMapping> mappings;
  if (!RingFds(&rings) || !RingMappings(&mappings)) return false;
  if (rings.empty()) return true;  // no loop has a ring (Node 20; a kernel without io_uring)
  // A ring fd whose inode is another's too cannot be told apart: the
  // kernel's one shared anon inode, or a ring opened twice.
  for (size_t i = 0; i < rings.size(); i++) {
    for (size_t k = i + 1; k < rings.size(); k++) {
      if (rings[i].second == rings[k].second) return false;
    }
  }
  std::vector<ino_t> mine;
  if (loop->internal_fields != nullptr) {
    // Word by word through the loop's own allocation: a value inside a
    // ring's mapping is a pointer of this loop's into its ring.
    const unsigned char* base = static_cast<const unsigned char*>(loop->internal_fields);
    size_t size = malloc_usable_size(loop->internal_fields);
    for (size_t at = 0; at + sizeof(uintptr_t) <= size; at += sizeof(uintptr_t)) {
      uintptr_t v;
      memcpy(&v, base + at, sizeof(v));
      for (const RingMapping& m : mappings) {
        if (v >= m.start && v < m.end && std::find(mine.begin(), mine.end(), m.inode) == mine.end()) mine.push_back(m.inode);
      }
    }
  }
  for (const auto& [fd, inode] : rings) {
    if (std::find(mine.begin(), mine.end(), inode) != mine.end()) out->push_back(fd);
  }
  return true;
}

void RingFdsNotOwned(std::vector<int>* out) {
  std::vector<int> fds;
  RingFdNumbers(&fds);
  for (int fd : fds) {
    if (!FdIsOwned(fd)) out->push_back(fd);
  }
}

}  // namespace fdbridge
