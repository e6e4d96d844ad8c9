// The background closer's hand-over (FdCloseInBackground, native/fd_ops.cc)
// reads each fd's file and its registration as one step. Another thread's
// take-over of the number (the program closes an fd of fdbridge's, and a new
// fd of fdbridge's takes the number) is made to happen while the hand-over
// reads the file: statx(2) is replaced here by one that, for the fd under
// test, lets a thread close that fd and make a new fd of fdbridge's (another
// memfd) at its number, before or after the real statx. The new fd must come
// out of it open, on its own file, still registered and not noted as closed
// by someone else.
//
// The thread runs until it is done, or until it waits for a lock (the
// registry's, which the hand-over may hold then): its system call is read
// from /proc/self/task/<tid>/syscall, no clock involved.
//
// The file is read outside the registry's lock: a thread that registers a
// new fd of fdbridge's while the hand-over's statx runs ("unlocked") is
// not made to wait for it. So is a given copy's as it is marked
// (FdMarkGiven, FdDupAllGiven: "mark-given-unlocked", "dup-given-unlocked"),
// and a take-over of the number during FdMarkGiven's read leaves the new fd
// of ours unmarked ("mark-given-take-over").
//
// A given copy (FdMarkGiven) handed over as any fd of ours ("given") is
// checked against the file kept in its registration, not read again: no
// statx on the handing thread, and a file the program put at its number
// is still left open.
//
// Then: a batch of many fds leaves no room for its jobs behind in the
// calling thread (the heap in use comes back to what it was).
//
// Prints "ok <checks>" and exits 0, or says what differed and exits 1. Its
// open-fd table is checked to be the same afterwards. Run by
// test/native/hand-over.test.ts with a mode: "before" or "after" (when the
// take-over comes relative to the real statx), "unlocked",
// "mark-given-unlocked", "dup-given-unlocked", "mark-given-take-over",
// "given" or "batch-memory".
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <string>
#include <vector>

#include "fd_ops.h"
#include "open_fds.h"

namespace {

int checks = 0;

void Check(bool ok, const char* what) {
  checks++;
  if (!ok) {
    fprintf(stderr, "failed: %s\n", what);
    exit(1);
  }
}

struct TakeOver {
  int fd = -1;        // the number to take over
  int new_file = -1;  // what the new fd of ours duplicates
  std::atomic<int> tid{0};
  std::atomic<bool> done{false};
  int taken = -1;  // the new fd of ours
};

void* TakeOverThread(void* arg) {
  TakeOver* t = static_cast<TakeOver*>(arg);
  t->tid = static_cast<int>(syscall(SYS_gettid));
  close(t->fd);  // the program's close, behind fdbridge's back
  t->taken = fdbridge::FdDupHigh(t->new_file);
  t->done = true;
  return nullptr;
}

// Whether thread `tid` is waiting in futex(2) (a lock) now.
bool InFutex(int tid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
  int f = open(path, O_RDONLY | O_CLOEXEC);
  if (f < 0) return false;
  char buf[64] = {0};
  ssize_t n = read(f, buf, sizeof(buf) - 1);
  close(f);
  return n > 0 && atol(buf) == SYS_futex && buf[0] != 'r';  // "running" otherwise
}

// Set by the test: the fd whose statx makes the take-over happen (once),
// and whether before the real statx (else after).
int g_take_over_fd = -1;
bool g_before = false;
TakeOver g_take_over;
pthread_t g_thread;

void RunTakeOver() {
  g_take_over.fd = g_take_over_fd;
  g_take_over_fd = -1;
  if (pthread_create(&g_thread, nullptr, TakeOverThread, &g_take_over) != 0) {
    perror("pthread_create");
    exit(1);
  }
  // Until it is done, or waits for the registry's lock (held by the hand-over).
  while (!g_take_over.done && (g_take_over.tid == 0 || !InFutex(g_take_over.tid))) sched_yield();
}

// "unlocked": the fd whose statx starts a thread that makes (and closes) a
// new fd of ours, and whether that thread waited for a lock, not done.
// kAnyFd: the next statx of any fd.
constexpr int kAnyFd = -2;
int g_register_during_fd = -1;
int g_register_file = -1;
TakeOver g_register;
pthread_t g_register_thread;
bool g_register_waited = false;

void* RegisterThread(void* arg) {
  TakeOver* t = static_cast<TakeOver*>(arg);
  t->tid = static_cast<int>(syscall(SYS_gettid));
  t->taken = fdbridge::FdDupHigh(t->new_file);
  if (t->taken >= 0) fdbridge::FdClose(t->taken);
  t->done = true;
  return nullptr;
}

void RunRegister() {
  g_register_during_fd = -1;
  g_register.new_file = g_register_file;
  if (pthread_create(&g_register_thread, nullptr, RegisterThread, &g_register) != 0) {
    perror("pthread_create");
    exit(1);
  }
  while (!g_register.done && (g_register.tid == 0 || !InFutex(g_register.tid))) sched_yield();
  g_register_waited = !g_register.done;
}

}  // namespace

// "given": statx calls made by the thread g_count_tid names (0: none counted).
std::atomic<pid_t> g_count_tid{0};
std::atomic<int> g_statx_calls{0};

// fd_ops.cc's statx, for this program.
extern "C" int statx(int dirfd, const char* path, int flags, unsigned int mask, struct statx* buf) noexcept {
  if (g_count_tid != 0 && static_cast<pid_t>(syscall(SYS_gettid)) == g_count_tid) g_statx_calls++;
  if (dirfd == g_register_during_fd || (g_register_during_fd == kAnyFd && dirfd >= 0)) RunRegister();
  bool mine = dirfd == g_take_over_fd;
  if (mine && g_before) RunTakeOver();
  long r = syscall(SYS_statx, dirfd, path, flags, mask, buf);
  int saved = errno;
  if (mine && !g_before) RunTakeOver();
  errno = saved;
  return static_cast<int>(r);
}

namespace {

std::string Identity(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return "closed";
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

void WaitDone(uint64_t ticket) {
  while (!fdbridge::FdBackgroundCloseDone(ticket)) sched_yield();
}

void TakeOverDuringHandOver(bool before) {
  int first_file = memfd_create("hand-over-first", MFD_CLOEXEC);
  int second_file = memfd_create("hand-over-second", MFD_CLOEXEC);
  Check(first_file >= 0 && second_file >= 0, "memfd_create");
  int ours = fdbridge::FdDupHigh(first_file);
  Check(ours >= 0, "FdDupHigh");
  uint64_t first_registration = fdbridge::FdRegistration(ours);
  Check(first_registration != 0, "the first fd of ours is registered");
  fdbridge::FdWatchClosedByOthers(true);
  g_take_over.new_file = second_file;
  g_take_over_fd = ours;
  g_before = before;
  uint64_t ticket = fdbridge::FdCloseInBackground(&ours, 1, 0, false);
  pthread_join(g_thread, nullptr);
  WaitDone(ticket);
  int taken = g_take_over.taken;
  Check(taken == ours, "the new fd of ours took the number");
  uint64_t second_registration = fdbridge::FdRegistration(taken);
  Check(Identity(taken) == Identity(second_file), "the new fd is open, on its own file");
  Check(second_registration != 0 && second_registration != first_registration, "the new fd is still registered as ours");
  Check(!fdbridge::FdWasClosedByOther(second_registration), "the new fd is not noted as closed by someone else");
  fdbridge::FdWatchClosedByOthers(false);
  Check(fdbridge::FdClose(taken) == 0, "the new fd closes");
  Check(fdbridge::FdRegistration(taken) == 0, "closed, it is no longer ours");
  close(first_file);
  close(second_file);
}

void RegisterDuringHandOver() {
  int file = memfd_create("hand-over-unlocked", MFD_CLOEXEC);
  Check(file >= 0, "memfd_create");
  int ours = fdbridge::FdDupHigh(file);
  Check(ours >= 0, "FdDupHigh");
  g_register_file = file;
  g_register_during_fd = ours;
  uint64_t ticket = fdbridge::FdCloseInBackground(&ours, 1, 0, false);
  pthread_join(g_register_thread, nullptr);
  WaitDone(ticket);
  Check(!g_register_waited, "a thread registering an fd of ours does not wait for the hand-over's statx");
  Check(g_register.taken >= 0, "that thread made its fd");
  Check(Identity(ours) == "closed", "the fd handed over is closed");
  close(file);
}

// A copy marked given (FdMarkGiven of a registered fd, or FdDupAllGiven's
// new copy) has its file read outside the registry's lock: a thread that
// registers an fd of ours meanwhile does not wait.
void RegisterDuringMarkGiven(bool dup) {
  constexpr uint64_t kOwner = 77;
  int file = memfd_create("mark-given-unlocked", MFD_CLOEXEC);
  Check(file >= 0, "memfd_create");
  g_register_file = file;
  int copy = -1;
  if (dup) {
    g_register_during_fd = kAnyFd;
    // As dupHigh(file, givenTo) calls it: the number checked against the
    // registry (FdRefuseOwned) and the copy made.
    Check(fdbridge::FdDupCallersFds(&file, 1, 0, kOwner, &copy) == 0, "FdDupCallersFds");
  } else {
    copy = fdbridge::FdDupHigh(file);
    Check(copy >= 0, "FdDupHigh");
    g_register_during_fd = copy;
    Check(fdbridge::FdMarkGiven(&copy, 1, kOwner) == 1, "FdMarkGiven marks the registered fd");
  }
  pthread_join(g_register_thread, nullptr);
  Check(!g_register_waited, "a thread registering an fd of ours does not wait for the mark's statx");
  if (dup) {
    int again = -1;
    Check(fdbridge::FdDupCallersFds(&copy, 1, 0, kOwner, &again) == -EBADF && again == -1,
          "a number of ours given again is refused as closed");
  }
  Check(g_register.taken >= 0, "that thread made its fd");
  Check(fdbridge::FdIsGiven(copy, kOwner), "the copy is marked given");
  Check(fdbridge::FdClose(copy) == 0, "the copy closes");
  close(file);
}

// A take-over of the number while FdMarkGiven reads the file (before the
// real statx: the file read is the new fd's): the new fd of ours is not
// marked as the given copy, and stays open and registered.
void TakeOverDuringMarkGiven() {
  constexpr uint64_t kOwner = 78;
  int first_file = memfd_create("mark-given-first", MFD_CLOEXEC);
  int second_file = memfd_create("mark-given-second", MFD_CLOEXEC);
  Check(first_file >= 0 && second_file >= 0, "memfd_create");
  int ours = fdbridge::FdDupHigh(first_file);
  Check(ours >= 0, "FdDupHigh");
  g_take_over.new_file = second_file;
  g_take_over_fd = ours;
  g_before = true;
  size_t marked = fdbridge::FdMarkGiven(&ours, 1, kOwner);
  pthread_join(g_thread, nullptr);
  int taken = g_take_over.taken;
  Check(taken == ours, "the new fd of ours took the number");
  Check(marked == 0, "nothing marked: the registration read first ended");
  Check(!fdbridge::FdIsGiven(taken, kOwner), "the new fd is not marked given");
  Check(Identity(taken) == Identity(second_file), "the new fd is open, on its own file");
  Check(fdbridge::FdRegistration(taken) != 0, "the new fd is still registered as ours");
  Check(fdbridge::FdClose(taken) == 0, "the new fd closes");
  close(first_file);
  close(second_file);
}

// A given copy (FdMarkGiven) handed to the closer as any fd of ours
// (FdCloseInBackground, a helper's RELEASE): its file is the one it was
// given with, kept in its registration, and is not read again at the
// hand-over (no statx on the handing thread); a file the program put at
// its number after closing the copy behind fdbridge's back is still told
// apart from it, and left open.
void GivenHandOver() {
  constexpr uint64_t kOwner = 79;
  int given_file = memfd_create("given-hand-over", MFD_CLOEXEC);
  int program_file = memfd_create("given-hand-over-program", MFD_CLOEXEC);
  Check(given_file >= 0 && program_file >= 0, "memfd_create");
  int copies[2];
  for (int& copy : copies) {
    copy = fdbridge::FdDupHigh(given_file);
    Check(copy >= 0, "FdDupHigh");
  }
  Check(fdbridge::FdMarkGiven(copies, 2, kOwner) == 2, "FdMarkGiven marks both copies");
  // The second copy closed behind fdbridge's back, and a file of the
  // program's own put at its number (no fd of fdbridge's: no registration
  // of its own there).
  close(copies[1]);
  Check(dup3(program_file, copies[1], O_CLOEXEC) == copies[1], "dup3 puts the program's file at the number");
  fdbridge::FdWatchClosedByOthers(true);
  uint64_t registration = fdbridge::FdRegistration(copies[1]);
  g_count_tid = static_cast<pid_t>(syscall(SYS_gettid));
  uint64_t ticket = fdbridge::FdCloseInBackground(copies, 2, 0, true);
  g_count_tid = 0;
  Check(g_statx_calls == 0, "the hand-over of given copies reads no file (no statx)");
  WaitDone(ticket);
  Check(Identity(copies[0]) == "closed", "the given copy still at its number is closed");
  Check(Identity(copies[1]) == Identity(program_file), "the program's file at the other number is left open");
  Check(fdbridge::FdRegistration(copies[1]) == 0, "the closed copy's registration has ended");
  Check(fdbridge::FdWasClosedByOther(registration), "the closed copy is noted as closed by someone else");
  fdbridge::FdWatchClosedByOthers(false);
  close(copies[1]);
  close(given_file);
  close(program_file);
}

size_t HeapInUse() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

void BatchMemory() {
  // Numbers far above any open fd: each is found closed at the hand-over.
  constexpr int kBatch = 100000;
  std::vector<int> numbers(kBatch);
  for (int i = 0; i < kBatch; i++) numbers[i] = 1 << 30 | i;
  int one = 1 << 29;
  WaitDone(fdbridge::FdCloseInBackground(&one, 1, 0, false));  // the closer's threads and tables exist
  size_t before = HeapInUse();
  WaitDone(fdbridge::FdCloseInBackground(numbers.data(), numbers.size(), 0, false));
  WaitDone(fdbridge::FdCloseInBackground(&one, 1, 0, false));
  size_t after = HeapInUse();
  // A job is some 40 bytes: 100,000 of them kept would be 4 MB.
  if (after > before + 512 * 1024) fprintf(stderr, "heap in use: %zu before, %zu after\n", before, after);
  Check(after <= before + 512 * 1024, "a large batch's jobs are not kept by the thread that handed it over");
}

}  // namespace

int main(int argc, char** argv) {
  std::set<int> open_before = OpenFds();
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "before" || mode == "after") {
    TakeOverDuringHandOver(mode == "before");
  } else if (mode == "unlocked") {
    RegisterDuringHandOver();
  } else if (mode == "mark-given-unlocked" || mode == "dup-given-unlocked") {
    RegisterDuringMarkGiven(mode == "dup-given-unlocked");
  } else if (mode == "mark-given-take-over") {
    TakeOverDuringMarkGiven();
  } else if (mode == "given") {
    GivenHandOver();
  } else if (mode == "batch-memory") {
    BatchMemory();
  } else {
    fprintf(stderr, "mode: before, after, unlocked, mark-given-unlocked, dup-given-unlocked, mark-given-take-over, given or batch-memory\n");
    return 1;
  }
  Check(OpenFds() == open_before, "the open-fd table is as it was");
  printf("ok %d\n", checks);
  return 0;
}
