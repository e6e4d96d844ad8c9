// Plain POSIX file-descriptor primitives. No Node-API, no libuv: every function
// returns 0 (or a non-negative result) on success and -errno on failure, so the
// binding layer can turn failures into typed errors without consulting errno.
#ifndef FDBRIDGE_FD_OPS_H_
#define FDBRIDGE_FD_OPS_H_

#include <stdint.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace fdbridge {

// Identity of an open file description as far as the kernel exposes it.
struct FdIdentity {
  uint64_t dev;
  uint64_t ino;
  uint32_t mode;  // st_mode: file type and permission bits
};

struct FdEntry {
  int fd;
  std::string target;  // readlink of /proc/<pid>/fd/<fd>
};

// F_DUPFD_CLOEXEC: the duplicate is close-on-exec from its first instant.
int FdDupCloexec(int fd);

// Duplicates fds[0..n) into out[0..n), each with F_DUPFD_CLOEXEC numbered at
// least `min_fd`, all or none (on failure the duplicates made are closed).
int FdDupAllAbove(const int* fds, size_t n, int min_fd, int* out);

// close(2). Linux always releases the descriptor, even when close returns
// EINTR (see close(2), "Dealing with error returns"), so EINTR is success here.
int FdClose(int fd);

int FdIdentityOf(int fd, FdIdentity* out);

// Bit 0: FD_CLOEXEC, bit 1: O_NONBLOCK.
int FdGetFlags(int fd);
int FdSetCloexec(int fd, bool on);
int FdSetNonblock(int fd, bool on);

// The open-fd table of a process. pid <= 0 means the calling process; the
// directory stream used to read the table is not reported.
int FdList(pid_t pid, std::vector<FdEntry>* out);

// RLIMIT_NOFILE of the calling process.
int FdGetLimit(uint64_t* soft, uint64_t* hard);
int FdSetLimit(uint64_t soft, uint64_t hard);

// pipe2(O_CLOEXEC): out[0] the read end, out[1] the write end.
int FdPipe(int out[2]);

// memfd_create(name, MFD_CLOEXEC) and eventfd(0, EFD_CLOEXEC): anonymous
// files, for tests and scenarios that pass more kinds of fd.
int FdMemfd(const char* name);
int FdEventfd();

// pidfd_open(2) (always close-on-exec) and pidfd_getfd(2) (the new fd is
// close-on-exec too, see the man page). Both return the new fd or -errno.
int PidfdOpen(pid_t pid);
int PidfdGetfd(int pidfd, int target_fd);

}  // namespace fdbridge

#endif  // FDBRIDGE_FD_OPS_H_
