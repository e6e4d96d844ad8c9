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

// The lowest number fdbridge gives the fds it makes for itself: pins of fds
// waiting to be sent or pulled, a queued send's copies, the duplicates a
// direct or worker command receives, fds pulled with pidfd_getfd.
//
// open(2), socket(2), dup(2), recvmsg(2) and the rest take the lowest free
// number, so the caller's fds fill the table from 0 upwards. A number the
// caller has closed (and may still name, by mistake or in a race with a
// close) must not come back as one of ours: dup(stale) would then "succeed"
// on our copy of someone else's file. Kept at or above this floor, ours
// cannot take such a number while the caller's fds stay below it.
//
// It is half the soft RLIMIT_NOFILE (F_DUPFD fails with EINVAL at or above
// the limit), and at most kFdFloorCap: the kernel's fd array grows to the
// highest number in use (8 bytes a slot), and fork(2) copies it, so a floor
// near a limit of 1,048,576 would cost every process and child megabytes.
// Read once; read again when the limit changes through FdSetLimit, when a
// duplication finds the limit lowered under it, and on every use while it
// is below the highest floor seen (until the limit is raised again).
constexpr int kFdFloorCap = 8192;
int FdFloor();

// F_DUPFD_CLOEXEC at or above FdFloor(). No number free there is EMFILE,
// even when lower numbers are free: a lower one could be a number the
// caller still names.
int FdDupHigh(int fd);

// Duplicates fds[0..n) into out[0..n), all or none (on failure the
// duplicates made are closed), each at or above max(FdFloor(), min_fd).
// With min_fd above the highest fd of a list, no duplicate can take the
// number of a closed fd later in the list (and make it "succeed" on the
// wrong file). When there is no room at min_fd (it reaches the limit),
// every fd is checked to be open first and the duplicates go from the floor.
int FdDupAllHigh(const int* fds, size_t n, int min_fd, int* out);

// close(2). Linux always releases the descriptor, even when close returns
// EINTR (see close(2), "Dealing with error returns"), so EINTR is success here.
int FdClose(int fd);

// Hands `fd` to one dedicated thread that closes it. close(2) can block for
// as long as the file's last reference takes to go: a TCP socket with
// SO_LINGER and unsent data waits up to its linger time (socket(7)), a file
// on a hung NFS server longer. A process that closes fds other processes
// gave it (a helper daemon) must not run that on its event loop.
// Returns the close's ticket: closes happen in ticket order, and this one
// is done once FdBackgroundClosesDone() reaches its ticket.
uint64_t FdCloseInBackground(int fd);
// fds handed to FdCloseInBackground and not yet closed.
size_t FdBackgroundClosesPending();
// How many background closes have finished since the process started.
uint64_t FdBackgroundClosesDone();

// poll(2) of one fd with no wait: its revents, i.e. those of `events` that
// hold now plus POLLHUP / POLLERR / POLLNVAL (which poll always reports);
// 0 when none hold, or when poll itself fails. Retries EINTR.
int PollNow(int fd, short events);

// poll(2) with no wait: for each of fds[0..n), whether it is readable (or
// hung up / in error) now. A pidfd is readable once its process has exited.
int FdPollReadable(const int* fds, size_t n, std::vector<bool>* out);

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
// pidfd_getfd, moved at or above FdFloor() (pidfd_getfd has no minimum: it
// takes the lowest free number, which is then released at once).
int PidfdGetfdHigh(int pidfd, int target_fd);

}  // namespace fdbridge

#endif  // FDBRIDGE_FD_OPS_H_
