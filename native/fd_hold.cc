#include "fd_hold.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>
#include <unistd.h>

#include <atomic>

#include "fd_ops.h"
#include "scm_rights.h"
#include "unique_fd.h"

namespace fdbridge {

namespace {

// "/proc/<pid>/<what>", or "/proc/self/<what>" for pid <= 0.
void ProcPath(char* buf, size_t size, pid_t pid, const char* what) {
  if (pid <= 0) {
    snprintf(buf, size, "/proc/self/%s", what);
  } else {
    snprintf(buf, size, "/proc/%d/%s", static_cast<int>(pid), what);
  }
}

int OpenProcDir(pid_t pid, const char* what) {
  char path[64];
  ProcPath(path, sizeof(path), pid, what);
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

// Names a hold's socket "@fdbridge-leak-check-hold:<pid>:<n>" (an abstract
// address: no file) so that a process reading our table from outside (the
// harness's supervisor naming what a killed row process held) can tell it
// from our other sockets by its inode in /proc/<pid>/net/unix. Unnamed when
// the name is taken (another pid namespace's process of our number on this
// network namespace): it is only a name.
void BindHoldName(int sock) {
  static std::atomic<uint64_t> next{0};
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  int len = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "fdbridge-leak-check-hold:%d:%llu", static_cast<int>(getpid()),
                     static_cast<unsigned long long>(++next));
  bind(sock, reinterpret_cast<struct sockaddr*>(&addr), static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + 1 + len));
}

}  // namespace

int FdHoldFiles(pid_t pid, const int* fds, size_t n, FdHold* hold, std::vector<std::string>* held) {
  if (pid == getpid()) pid = 0;
  held->assign(n, std::string());
  UniqueFd send_end;
  UniqueFd queue;
  {
    // socketpair takes the lowest free numbers; the end kept moves above
    // the floor (FdOwnHigh) under the lock, as the library's own sockets do.
    OwnedFdsLock owned;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -errno;
    send_end.reset(sv[0]);
    BindHoldName(sv[1]);
    int high = FdOwnHigh(sv[1]);
    if (high < 0) return high;
    queue.reset(high);
  }
  std::string queue_file;
  int r = FdFileId(0, queue.get(), &queue_file);
  if (r < 0) return r;
  int d = OpenProcDir(pid, "fd");
  if (d < 0) return d;
  UniqueFd links(d);
  d = OpenProcDir(0, "fdinfo");
  if (d < 0) return d;
  UniqueFd self_info(d);
  // A few references at a time: each is open in our table (at the lowest
  // free number) only until its batch is queued.
  constexpr size_t kBatch = 64;
  UniqueFds batch;
  batch.reserve(kBatch);
  auto flush = [&]() -> int {
    if (batch.empty()) return 0;
    char byte = 'h';
    ssize_t s = ScmSend(send_end.get(), &byte, 1, batch.data(), batch.size(), nullptr, 0, /*dont_wait=*/true);
    batch.reset();  // queued (the queue holds its own references) or not: ours are closed
    return s < 0 ? static_cast<int>(s) : 0;
  };
  for (size_t i = 0; i < n; i++) {
    char name[16];
    snprintf(name, sizeof(name), "%d", fds[i]);
    UniqueFd ref(openat(links.get(), name, O_PATH | O_CLOEXEC));
    if (!ref) continue;  // closed since, or not ours to open: not held
    char ref_name[16];
    snprintf(ref_name, sizeof(ref_name), "%d", ref.get());
    std::string file;
    if (FdReadFileId(self_info.get(), ref_name, &file) != 0) continue;
    batch.push_back(std::move(ref));
    (*held)[i] = std::move(file);
    if (batch.size() == kBatch && (r = flush()) < 0) return r;
  }
  if ((r = flush()) < 0) return r;
  send_end.reset();
  hold->fd = queue.get();
  hold->file = queue_file;
  hold->registration = FdRegistration(queue.get());
  FdHoldsAdd(queue.get(), queue_file);
  queue.release();
  return 0;
}

bool FdHoldIntact(const FdHold& hold) {
  std::string now;
  return FdFileId(0, hold.fd, &now) == 0 && now == hold.file;
}

int FdReleaseHold(const FdHold& hold) {
  FdHoldsRemove(hold.fd, hold.file);
  if (!FdHoldIntact(hold)) {
    // Closed by someone else: its registration goes, never that of a new
    // fd of ours that took the number since.
    FdDisownRegistration(hold.fd, hold.registration);
    return -ESTALE;
  }
  FdClose(hold.fd);
  return 0;
}

}  // namespace fdbridge
