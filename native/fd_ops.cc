#include "fd_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kcmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <string>
#include <utility>
#include <vector>

#include "fd_hold.h"
#include "syscall_numbers.h"
#include "unique_fd.h"

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

namespace fdbridge {

namespace {

struct OwnedFds {
  struct Registration {
    uint64_t gen;     // never 0
    uint64_t holder;  // the environment it is held for (FdSetThreadHolder), or 0
    bool runtime_closes;  // FdRuntimeCloses
    bool closing;  // fdbridge's own close of it is under way (FdClose, FdCloseAll)
    bool at_thread_exit;  // FdUnregisterAtThreadExit: libuv closes it, unseen
    // A runtime_closes fd closed by someone else while its stream was still
    // to close it: the file fdbridge left at the number for libuv's close to
    // take (PutPlaceholderLocked), its device and inode; 0 for none.
    uint64_t placeholder_dev;
    uint64_t placeholder_ino;
    // A copy given to a command (FdDupAllGiven): the closer owner of the
    // ledger that closes it (0: not given), and its file as it was made
    // (file_known false when that could not be read).
    uint64_t given_to;
    bool file_known;
    FdIdentity file;
  };
  std::recursive_mutex mu;
  // fd -> its registration.
  std::unordered_map<int, Registration> gens;
  uint64_t next_gen = 0;
  // Loop starts not ended (FdLoopStartBegin): each one's id, and the fd
  // table when it began (fd -> its /proc/self/fd target).
  struct LoopStart {
    uint64_t id;
    std::unordered_map<int, std::string> table;
  };
  std::vector<LoopStart> loop_starts;
  uint64_t next_loop_start = 0;
  // loop_starts.size(), read without the lock on every check.
  std::atomic<size_t> loop_starts_open{0};
  // Read without the lock by FdClose: a process that holds none of its own
  // fds (most callers' most of the time) closes without taking it.
  std::atomic<size_t> count{0};
  // FdWatchClosedByOthers: how many watch, and the registrations found
  // closed by someone else while they do (emptied when the last stops).
  std::atomic<size_t> watchers{0};
  std::unordered_set<uint64_t> closed_by_others;
  // Registrations that ended because a new fd of ours took their number
  // while they were live: someone else had closed their fd (MarkNewLocked).
  // Their owners ask (FdStillHeld) before they close that number, which is
  // no longer theirs. Kept as the highest such registration of each number:
  // registrations are numbered in the order they are made, and a number's
  // live one is newer than every one it took over there, so every
  // registration of that number up to it has ended (taken over, or closed
  // by its owner, who asks no more). One entry per number, however many
  // times it is taken over: at most the fd table's size.
  std::unordered_map<int, uint64_t> taken_over;
  std::atomic<uint64_t> takeovers{0};  // how many take-overs so far, read without the lock
  // FdWakeOnTakeOvers: run at each take-over, under the lock.
  std::vector<std::pair<void (*)(void*), void*>> takeover_wakes;
  // Each number's install generation (FdInstalled): installs[fd] is the
  // generation the last fd fdbridge's native code put at that number got
  // (from next_gen: never given twice, whatever the number), 0 for a number
  // none was put at. Grows to the highest number installed, 8 bytes a number.
  std::vector<uint64_t> installs;
  // Each number's receipt tag (FdInstalledReceipt): receipts[fd] is the tag
  // of the socket whose receive made the number's current install, until a
  // command claims it (FdClaimReceipts) or another install comes there; 0
  // for none. Grown only by a tagged receipt.
  std::vector<uint64_t> receipts;
  uint64_t next_receipt_tag = 0;
  // Numbers of a caller's or client's that fdbridge is closing with the
  // lock let go (MarkNumberClosingLocked). A close calls the file's flush
  // on every close of a number, not only on the last reference's, and a
  // FUSE file's flush waits for its server: held under this lock, a server
  // that does not answer would stall every thread that takes it (a helper
  // daemon's main thread, for every client). The kernel frees the number
  // before the flush, so an fd put there meanwhile is another's (a new
  // install generation, another file). Each with the mark's token (only
  // its own close ends it), a copy of the file above the floor (-1: none
  // could be made) and the number's install generation and file as marked.
  struct NumberClose {
    uint64_t token;
    int copy;
    uint64_t install;
    bool known;
    FdIdentity file;
  };
  std::unordered_map<int, NumberClose> number_closes;
};

OwnedFds& TheOwnedFds() {
  static OwnedFds* owned = new OwnedFds();  // never destroyed: worker threads may close fds during exit
  return *owned;
}

// Every registration gets a generation of its own, also for a number still
// registered: that one was closed (the kernel hands out a number only once
// it is free), by fdbridge with its unregistration still to come (FdClose
// after its close(2), a stream's 'close'), which must not take this one with
// it, or by someone else (MarkNewLocked).
// The environment whose thread this is (0 on threads of our own, and before
// the addon is loaded on a thread).
thread_local uint64_t t_holder = 0;

uint64_t MarkOwnedLocked(OwnedFds& o, int fd) {
  auto [it, added] = o.gens.try_emplace(fd);
  it->second = {++o.next_gen, t_holder, false, false, false, 0, 0, 0, false, {}};
  if (added) o.count.fetch_add(1, std::memory_order_relaxed);
  return it->second.gen;
}

// The first size of OwnedFds::installs: 8 KiB, numbers up to 1023.
constexpr size_t kFirstInstalls = 1024;

// `fd` was just put in the table by fdbridge's native code: its number's
// install generation is `gen` from now on (FdInstalled). Under o.mu.
void NoteInstallLocked(OwnedFds& o, int fd, uint64_t gen, uint64_t receipt_tag = 0) {
  if (fd < 0) return;
  size_t at = static_cast<size_t>(fd);
  // Grown once to a size that holds a table's usual numbers (a receive of
  // a whole message's fds then allocates nothing), and doubled past it.
  if (at >= o.installs.size()) o.installs.resize(std::max({at + 1, o.installs.size() * 2, kFirstInstalls}));
  o.installs[at] = gen;
  if (receipt_tag != 0 && at >= o.receipts.size()) o.receipts.resize(std::max({at + 1, o.receipts.size() * 2, kFirstInstalls}));
  if (at < o.receipts.size()) o.receipts[at] = receipt_tag;
}

uint64_t InstallLocked(const OwnedFds& o, int fd) {
  size_t at = static_cast<size_t>(fd);
  return fd >= 0 && at < o.installs.size() ? o.installs[at] : 0;
}

// Whether kcmp(2) KCMP_FILE answers in this process (a kernel built
// without it, or a seccomp filter, refuses it): asked once, of an fd and
// its copy, which it must find the same file.
bool KcmpFileWorks(int fd, int copy) {
  static std::atomic<int> works{-1};
  int w = works.load(std::memory_order_relaxed);
  if (w < 0) {
    pid_t self = getpid();
    w = syscall(SYS_kcmp, self, self, KCMP_FILE, fd, copy) == 0 ? 1 : 0;
    works.store(w, std::memory_order_relaxed);
  }
  return w == 1;
}

// Marks `fd` as being closed by the calling thread (OwnedFds::number_closes),
// which then lets the lock go, closes the number and ends the mark
// (EndNumberCloses) with the token returned. `copy`: the file's copy above
// the floor, or -1. The number's file is read only where BeingClosedLocked
// cannot compare with the copy by kcmp. Under o.mu.
uint64_t MarkNumberClosingLocked(OwnedFds& o, int fd, int copy) {
  OwnedFds::NumberClose& mark = o.number_closes[fd];
  mark.token = ++o.next_gen;
  mark.copy = copy;
  mark.install = InstallLocked(o, fd);
  bool by_copy = copy >= 0 && KcmpFileWorks(fd, copy);
  mark.known = !by_copy && FdFileIdentity(fd, &mark.file) == 0;  // statx AT_STATX_DONT_SYNC: asks no filesystem
  return mark.token;
}

// Ends the marks (number, token) of closes that have returned, in one hold
// of the lock; a mark another close of the number made since stays.
void EndNumberCloses(const std::vector<std::pair<int, uint64_t>>& marks) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (const auto& [fd, token] : marks) {
    auto it = o.number_closes.find(fd);
    if (it != o.number_closes.end() && it->second.token == token) o.number_closes.erase(it);
  }
}

// Whether `fd` is still the very fd that a close under way of the number
// is closing (MarkNumberClosingLocked): then a close of it is fdbridge's
// already. Told by the number's install generation (an fd fdbridge put there
// since is another), then by comparing it with the mark's copy by kcmp(2)
// KCMP_FILE, or, where there is no copy or kcmp is not to be had (a kernel
// built without it, a seccomp filter that refuses it), by its file. False
// for a number not marked, a free one, or one another fd took since the
// close freed it. Under o.mu.
bool BeingClosedLocked(const OwnedFds& o, int fd) {
  if (o.number_closes.empty()) return false;
  auto it = o.number_closes.find(fd);
  if (it == o.number_closes.end()) return false;
  const OwnedFds::NumberClose& mark = it->second;
  // An fd put at the number by fdbridge since is another fd, even a copy of
  // the very open file being closed (received again), which kcmp cannot
  // tell from it.
  if (InstallLocked(o, fd) != mark.install) return false;
  if (mark.copy >= 0) {
    pid_t self = getpid();
    long r = syscall(SYS_kcmp, self, self, KCMP_FILE, fd, mark.copy);
    if (r >= 0) return r == 0;
    if (errno == EBADF) return false;  // the copy is open (ours until the mark ends): the number is free
  }
  FdIdentity now;
  if (FdFileIdentity(fd, &now) != 0) return false;
  return !mark.known || SameFile(now, mark.file);
}

// MarkOwnedLocked for an fd the kernel has just made (a dup, a socket, a
// pidfd, a received fd): its number was free a moment ago. A registration
// still there whose fd fdbridge is not closing (FdClose and FdCloseAll mark
// theirs first) and that nothing else closes unseen (libuv: a stream's, a
// loop's) was closed by someone else: it ends as FdClosedByOther does, and
// its owner, whose close of the number is still to come, must not close
// the new fd (FdStillHeld says so).
void MarkNewLocked(OwnedFds& o, int* fd);

// A libuv stream's fd (runtime_closes) whose stream has not begun its close
// (FdRuntimeClosing) is still libuv's to close, and libuv closes by number:
// a new fd at that number (someone else closed the stream's) would be
// closed with the stream, whenever it ends. So the stream's number gets a
// file of fdbridge's own for libuv's close to take, a placeholder: over a
// new fd of ours, which moves to another number first (PutPlaceholderLocked),
// or, before a worker's loop opens its fds where they stay (FdLoopStartBegin),
// on the number left free (PlaceholderAtFreedNumberLocked). The stream keeps
// its registration (its close then finds another file there: closed by
// someone else, FdClosedByOther).
//
// Until its close the stream goes on using the number: libuv reads and
// writes it, and (re)adds it to epoll when the stream starts reading or
// writing again. So the placeholder is one end of a socket pair whose
// other end is closed: epoll takes it (a regular file, a memfd, gives EPERM,
// on which libuv aborts the process), a read finds end of file and a write
// fails with EPIPE (Node ignores SIGPIPE), so the stream ends, holding
// nothing and writing nowhere. Returns it (not placed yet) with its file,
// or an empty one when none could be made (EMFILE).
UniqueFd MakePlaceholderLocked(OwnedFds& o, FdIdentity* file) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return UniqueFd();  // installed: NoteInstallLocked below
  NoteInstallLocked(o, pair[0], ++o.next_gen);
  NoteInstallLocked(o, pair[1], ++o.next_gen);
  UniqueFd placeholder(pair[0]);
  close(pair[1]);  // a fresh socket's only reference, nothing queued: cannot block
  // Read as ClosePlaceholderLocked reads the number's file, to compare.
  if (FdFileIdentity(placeholder.get(), file) != 0) return UniqueFd();
  return placeholder;
}

// The placeholder `file` is at the stream's number now (installed there):
// noted on the stream's registration, and the stream's fd as closed by
// someone else while a check watches.
void PlaceholderPlacedLocked(OwnedFds& o, OwnedFds::Registration& stream, int fd, const FdIdentity& file) {
  NoteInstallLocked(o, fd, ++o.next_gen);  // the placeholder, a file of fdbridge's at the stream's number
  stream.placeholder_dev = file.dev;
  stream.placeholder_ino = file.ino;
  if (o.watchers.load(std::memory_order_relaxed) != 0) o.closed_by_others.insert(stream.gen);
}

// A new fd of ours at the stream's number *fd moves to another number
// (written back to *fd), and a placeholder takes the stream's. False when
// no file or number could be had for that (EMFILE): the new fd then stays
// where it is, at risk.
bool PutPlaceholderLocked(OwnedFds& o, OwnedFds::Registration& stream, int* fd) {
  FdIdentity file;
  UniqueFd placeholder = MakePlaceholderLocked(o, &file);
  if (!placeholder) return false;
  UniqueFd moved(fcntl(*fd, F_DUPFD_CLOEXEC, FdFloor()));  // installed: MarkNewLocked below
  if (!moved) return false;
  // Not the new file's last reference (`moved` holds it), but dup3 over it
  // calls its flush all the same, under the lock: a file on a FUSE
  // filesystem whose server does not answer holds this thread and every
  // one that takes the lock until the server answers or the connection is
  // aborted. Reached only once code of the process's own has closed a
  // stream's number of fdbridge's behind its back and an fd of such a
  // file lands there (a client's, received or pulled).
  if (dup3(placeholder.get(), *fd, O_CLOEXEC) < 0) return false;  // installed: PlaceholderPlacedLocked
  PlaceholderPlacedLocked(o, stream, *fd, file);
  *fd = moved.release();
  MarkNewLocked(o, fd);  // the lowest free number at or above the floor: looked at in turn
  return true;
}

// The stream's number `fd`, found free (someone else closed the stream's
// fd), gets a placeholder: F_DUPFD gives the lowest free number at or above
// it, so the placeholder lands there only while it is still free, never
// over an fd another thread opened there meanwhile (then nothing is placed).
void PlaceholderAtFreedNumberLocked(OwnedFds& o, OwnedFds::Registration& stream, int fd) {
  FdIdentity file;
  UniqueFd placeholder = MakePlaceholderLocked(o, &file);
  if (!placeholder) return;
  // Made at the number itself (the lowest free one), or copied there.
  UniqueFd placed(placeholder.get() == fd ? placeholder.release() : fcntl(placeholder.get(), F_DUPFD_CLOEXEC, fd));  // installed: PlaceholderPlacedLocked
  if (placed.get() != fd) return;  // taken meanwhile, or EMFILE: a fresh socket's copy closes, cannot block
  PlaceholderPlacedLocked(o, stream, placed.release(), file);
}

// The placeholder at `fd` (PutPlaceholderLocked, PlaceholderAtFreedNumberLocked),
// if it is still there: a stream whose handle Node closed at its
// environment's teardown closed whatever was at the number then, and that
// may have been before the placeholder came.
void ClosePlaceholderLocked(int fd, const OwnedFds::Registration& r) {
  if (r.placeholder_ino == 0) return;
  // The number may hold any file by now, a client's included.
  if (FdHoldsFile(fd, {r.placeholder_dev, r.placeholder_ino, 0})) {
    close(fd);  // a socket with nothing queued, its peer closed: cannot block
  }
}

// `old`, the registration at `fd` where a new fd now is, was closed by
// someone else unless fdbridge is closing it itself (closing) or libuv
// closes it unseen (runtime_closes: a stream's; at_thread_exit: a loop's,
// as its thread ends): then it is taken over: noted while a check watches, its owner's close
// must leave the number alone (FdStillHeld), and the count of take-overs
// grows (FdTakeOvers: what a relay's stream looks at before each read and
// write of its number) and the owners that asked (FdWakeOnTakeOvers) are
// woken: a relay's stream whose number gets no more events looks then.
// Under o.mu.
void TakeOverLocked(OwnedFds& o, const OwnedFds::Registration& old, int fd) {
  if (old.closing || old.runtime_closes || old.at_thread_exit) return;
  if (o.watchers.load(std::memory_order_relaxed) != 0) o.closed_by_others.insert(old.gen);
  uint64_t& highest = o.taken_over[fd];
  if (old.gen > highest) highest = old.gen;
  o.takeovers.fetch_add(1, std::memory_order_relaxed);
  for (const auto& wake : o.takeover_wakes) wake.first(wake.second);
}

void MarkNewLocked(OwnedFds& o, int* fd) {
  auto it = o.gens.find(*fd);
  if (it != o.gens.end()) {
    OwnedFds::Registration& old = it->second;
    if (old.runtime_closes && !old.closing && PutPlaceholderLocked(o, old, fd)) return;
    TakeOverLocked(o, old, *fd);
  }
  NoteInstallLocked(o, *fd, MarkOwnedLocked(o, *fd));
}

void MarkNew(int* fds, size_t n) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) MarkNewLocked(o, &fds[i]);
}

}  // namespace

OwnedFdsLock::OwnedFdsLock() { TheOwnedFds().mu.lock(); }
OwnedFdsLock::~OwnedFdsLock() { TheOwnedFds().mu.unlock(); }

namespace {

// Whether `target` (a /proc/self/fd link) is of a kind libuv opens for an
// event loop: epoll, io_uring, the signal pipe, the async eventfd, inotify,
// the EMFILE reserve (/dev/null, or / when that cannot be opened).
bool LoopKind(const std::string& target) {
  static const char* const kKinds[] = {"anon_inode:[eventpoll]", "anon_inode:[io_uring]", "anon_inode:[eventfd]",
                                       "anon_inode:inotify", "/dev/null", "/"};
  if (target.compare(0, 6, "pipe:[") == 0) return true;
  for (const char* kind : kKinds) {
    if (target == kind) return true;
  }
  return false;
}

// Whether `fd` could be an fd a starting loop opened (FdLoopStartBegin).
// Under o.mu.
bool MayBeStartingLoopFd(const OwnedFds& o, int fd) {
  char path[32];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  char buf[64];
  ssize_t len = readlink(path, buf, sizeof(buf));
  if (len < 0 || len == static_cast<ssize_t>(sizeof(buf))) return false;  // not open (the use fails with EBADF), or no loop fd's
  std::string target(buf, static_cast<size_t>(len));
  if (!LoopKind(target)) return false;
  for (const OwnedFds::LoopStart& start : o.loop_starts) {
    auto it = start.table.find(fd);
    if (it == start.table.end() || it->second != target) return true;
  }
  return false;
}

}  // namespace

int FdRefuseOwned(const int* fds, size_t n) {
  OwnedFds& o = TheOwnedFds();
  if (o.count.load(std::memory_order_relaxed) == 0 && o.loop_starts_open.load(std::memory_order_relaxed) == 0) return 0;
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) {
    if (o.gens.count(fds[i]) != 0) return -EBADF;
  }
  if (!o.loop_starts.empty()) {
    for (size_t i = 0; i < n; i++) {
      if (MayBeStartingLoopFd(o, fds[i])) return -EBADF;
    }
  }
  return 0;
}

uint64_t FdLoopStartBegin() {
  OwnedFds& o = TheOwnedFds();
  // Under the lock: the listing's own directory fd, at the lowest free
  // number, is not looked at by any check meanwhile.
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  // The loop's fds open at the lowest free numbers and stay there (libuv
  // keeps them by number; FdMarkOwnedInPlace cannot move them): a libuv
  // stream's number that someone else closed must not be free then, or the
  // stream's close, by number, would close the loop's fd under it (its
  // epoll fd: libuv aborts the process).
  for (auto& [fd, r] : o.gens) {
    if (r.runtime_closes && !r.closing && fcntl(fd, F_GETFD) < 0 && errno == EBADF) PlaceholderAtFreedNumberLocked(o, r, fd);
  }
  OwnedFds::LoopStart start{++o.next_loop_start, {}};
  std::vector<FdEntry> entries;
  // Not listed (the table unreadable): an empty table, so that every fd of
  // a loop's kind is refused until the start ends.
  if (FdList(0, &entries) == 0) {
    for (FdEntry& e : entries) start.table.emplace(e.fd, std::move(e.target));
  }
  o.loop_starts.push_back(std::move(start));
  o.loop_starts_open.store(o.loop_starts.size(), std::memory_order_relaxed);
  return o.next_loop_start;
}

void FdLoopStartEnd(uint64_t id) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  o.loop_starts.erase(std::remove_if(o.loop_starts.begin(), o.loop_starts.end(),
                                     [id](const OwnedFds::LoopStart& s) { return s.id == id; }),
                      o.loop_starts.end());
  o.loop_starts_open.store(o.loop_starts.size(), std::memory_order_relaxed);
}

size_t FdLoopStartsOpen() { return TheOwnedFds().loop_starts_open.load(std::memory_order_relaxed); }

namespace {

// The registrations the calling thread gives up as it exits
// (FdUnregisterAtThreadExit), each with its file as it was registered.
struct UnregisterAtExit {
  struct Entry {
    int fd;
    uint64_t registration;
    FdIdentity file;  // as marked (FdFileIdentity), {} when not open then
  };
  std::vector<Entry> registrations;
  ~UnregisterAtExit() {
    for (const Entry& e : registrations) FdDisownRegistration(e.fd, e.registration);
  }
};

thread_local UnregisterAtExit t_unregister_at_exit;

}  // namespace

void FdUnregisterAtThreadExit(const int* fds, size_t n) {
  auto& registrations = t_unregister_at_exit.registrations;
  for (size_t i = 0; i < n; i++) {
    uint64_t registration = 0;
    {
      OwnedFds& o = TheOwnedFds();
      std::lock_guard<std::recursive_mutex> lock(o.mu);
      auto it = o.gens.find(fds[i]);
      if (it != o.gens.end()) {
        it->second.at_thread_exit = true;
        registration = it->second.gen;
      }
    }
    if (registration == 0) continue;
    FdIdentity file{};
    if (FdFileIdentity(fds[i], &file) != 0) file = {};  // closed already: FdCheckThreadExitFds says so
    auto it = std::find_if(registrations.begin(), registrations.end(), [&](const auto& r) { return r.fd == fds[i]; });
    if (it != registrations.end()) {
      *it = {fds[i], registration, file};
    } else {
      registrations.push_back({fds[i], registration, file});
    }
  }
}

void FdCheckThreadExitFds() {
  for (const UnregisterAtExit::Entry& e : t_unregister_at_exit.registrations) {
    if (FdRegistration(e.fd) != e.registration) continue;
    FdIdentity now;
    if (FdFileIdentity(e.fd, &now) != 0 || !SameFile(now, e.file)) FdClosedByOther(e.fd, e.registration);
  }
}

void FdMarkOwned(const int* fds, size_t n) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) MarkOwnedLocked(o, fds[i]);
}

void FdMarkOwnedInPlace(const int* fds, size_t n) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) {
    auto it = o.gens.find(fds[i]);
    if (it != o.gens.end()) TakeOverLocked(o, it->second, fds[i]);
    MarkOwnedLocked(o, fds[i]);
  }
}

void FdMarkNew(int* fds, size_t n) { MarkNew(fds, n); }

int FdInstalled(int fd) {
  if (fd < 0) return fd;
  FdInstalledAll(&fd, 1);
  return fd;
}

void FdInstalledAll(const int* fds, size_t n) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) NoteInstallLocked(o, fds[i], ++o.next_gen);
}

void FdInstalledReceipt(int fd, uint64_t receipt_tag) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  NoteInstallLocked(o, fd, ++o.next_gen, receipt_tag);
}

uint64_t FdNewReceiptTag() {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  return ++o.next_receipt_tag;
}

void FdClaimReceipts(const int* fds, size_t n, uint64_t receipt_tag, uint64_t* out) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) {
    size_t at = static_cast<size_t>(fds[i]);
    out[i] = 0;
    if (receipt_tag == 0 || fds[i] < 0 || at >= o.receipts.size() || o.receipts[at] != receipt_tag) continue;
    o.receipts[at] = 0;
    out[i] = InstallLocked(o, fds[i]);
  }
}

void FdInstallGenerations(const int* fds, size_t n, uint64_t* out) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) out[i] = InstallLocked(o, fds[i]);
}

namespace {

// FdStillHeld; with `begin_close`, one that is, and is still the number's
// registration, is marked as being closed by fdbridge (BeginClose) under the
// same lock, and *begin_close says whether it was.
// StillHeld once the file at `fd` was looked at: `same` whether it is the
// owner's (true when there was nothing to compare with).
bool StillHeldLooked(int fd, uint64_t registration, bool same, bool* begin_close);

bool StillHeld(int fd, uint64_t registration, const FdIdentity* identity, bool* begin_close) {
  if (registration == 0) return true;
  // The file's identity, read before the lock (a statx each, no filesystem
  // asked: FdFileIdentity): another file at the number, or none, is not this
  // owner's.
  bool same = identity == nullptr || FdHoldsFile(fd, *identity);
  return StillHeldLooked(fd, registration, same, begin_close);
}

bool StillHeldLooked(int fd, uint64_t registration, bool same, bool* begin_close) {
  if (registration == 0) return true;
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto taken = o.taken_over.find(fd);
  if (taken != o.taken_over.end() && registration <= taken->second) return false;
  if (!same) {
    FdClosedByOther(fd, registration);  // ends it if it is still the number's (noted while a check watches)
    return false;
  }
  if (begin_close != nullptr) {
    auto it = o.gens.find(fd);
    *begin_close = it != o.gens.end() && it->second.gen == registration;
    if (*begin_close) it->second.closing = true;
  }
  return true;
}

}  // namespace

bool FdStillHeld(int fd, uint64_t registration, const FdIdentity* identity) {
  return StillHeld(fd, registration, identity, nullptr);
}

bool FdStillHeldLooked(int fd, uint64_t registration, bool same_file) {
  return StillHeldLooked(fd, registration, same_file, nullptr);
}

uint64_t FdTakeOvers() { return TheOwnedFds().takeovers.load(std::memory_order_relaxed); }

void FdWakeOnTakeOvers(void (*wake)(void*), void* arg) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  o.takeover_wakes.emplace_back(wake, arg);
}

void FdStopWakeOnTakeOvers(void* arg) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto& wakes = o.takeover_wakes;
  wakes.erase(std::remove_if(wakes.begin(), wakes.end(), [arg](const auto& w) { return w.second == arg; }), wakes.end());
}

int FdCloseHeld(int fd, uint64_t registration, const FdIdentity* identity) {
  if (!FdStillHeld(fd, registration, identity)) return -EBADF;
  return FdClose(fd);
}

void FdDisown(int fd) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  if (o.gens.erase(fd) != 0) o.count.fetch_sub(1, std::memory_order_relaxed);
}

namespace {

// The end of FdDisownGiven and FdDisownHeld: disowns `fd` only while it
// has registration `gen` (0: none, then nothing to disown) and holds a file:
// the file `given` when `known`. The number is read outside the lock
// (FdFileGone asks no filesystem): no file there, or another file
// than the copy was given with, means the copy was closed by someone else
// (the command itself, fs.closeSync) and the number is free or a file
// nobody registered took it. Not the command's to adopt: the registration
// ends as closed by someone else. One whose file is not known is told
// apart only by a free number.
bool DisownWhileStill(int fd, uint64_t gen, bool known, const FdIdentity& given) {
  OwnedFds& o = TheOwnedFds();
  bool gone = FdFileGone(fd, known, given);
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto it = o.gens.find(fd);
  // Another registration now (a new fd of ours took the number), or none
  // where there was one: the file read was not this copy's either.
  if ((it == o.gens.end() ? 0 : it->second.gen) != gen) return false;
  if (gone) {
    FdClosedByOther(fd, gen);
    return false;
  }
  if (gen != 0) {
    o.gens.erase(it);
    o.count.fetch_sub(1, std::memory_order_relaxed);
  }
  return true;
}

}  // namespace

bool FdDisownGiven(int fd, uint64_t owner, std::optional<FdIdentity>* file) {
  OwnedFds& o = TheOwnedFds();
  uint64_t gen;
  bool known;
  FdIdentity given;
  {
    std::lock_guard<std::recursive_mutex> lock(o.mu);
    auto it = o.gens.find(fd);
    if (it == o.gens.end() || it->second.given_to != owner) return false;
    gen = it->second.gen;
    known = it->second.file_known;
    given = it->second.file;
  }
  if (!DisownWhileStill(fd, gen, known, given)) return false;
  if (file != nullptr) {
    if (known) {
      *file = given;
    } else {
      file->reset();
    }
  }
  return true;
}

bool FdDisownHeld(int fd, uint64_t registration) {
  return DisownWhileStill(fd, registration, /*known=*/false, FdIdentity{});
}

uint64_t FdRegistration(int fd) {
  OwnedFds& o = TheOwnedFds();
  if (o.count.load(std::memory_order_relaxed) == 0) return 0;
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto it = o.gens.find(fd);
  return it == o.gens.end() ? 0 : it->second.gen;
}

void FdDisownRegistration(int fd, uint64_t registration) {
  if (registration == 0) return;
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto it = o.gens.find(fd);
  if (it != o.gens.end() && it->second.gen == registration) {
    o.gens.erase(it);
    o.count.fetch_sub(1, std::memory_order_relaxed);
  }
}

void FdClosedByOther(int fd, uint64_t registration) {
  if (registration == 0) return;
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto it = o.gens.find(fd);
  if (it == o.gens.end() || it->second.gen != registration) return;  // ended already
  // Noted as the registration ends (under the lock): whoever sees it ended sees the note.
  if (o.watchers.load(std::memory_order_relaxed) != 0) o.closed_by_others.insert(registration);
  o.gens.erase(it);
  o.count.fetch_sub(1, std::memory_order_relaxed);
}

void FdWatchClosedByOthers(bool on) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  if (on) {
    o.watchers.fetch_add(1, std::memory_order_relaxed);
  } else if (o.watchers.load(std::memory_order_relaxed) != 0 && o.watchers.fetch_sub(1, std::memory_order_relaxed) == 1) {
    o.closed_by_others.clear();
  }
}

bool FdWasClosedByOther(uint64_t registration) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  return o.closed_by_others.count(registration) != 0;
}

size_t FdOwnedCount() { return TheOwnedFds().count.load(std::memory_order_relaxed); }

bool FdIsOwned(int fd) {
  OwnedFds& o = TheOwnedFds();
  if (o.count.load(std::memory_order_relaxed) == 0) return false;
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  return o.gens.count(fd) != 0;
}

uint64_t FdNewHolder() {
  static std::atomic<uint64_t> last{0};
  return ++last;
}

void FdSetThreadHolder(uint64_t holder) { t_holder = holder; }

void FdHeldByNative(const int* fds, size_t n) {
  OwnedFds& o = TheOwnedFds();
  if (o.count.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) {
    auto it = o.gens.find(fds[i]);
    if (it != o.gens.end()) it->second.holder = 0;
  }
}

uint64_t FdRuntimeCloses(int fd) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto it = o.gens.find(fd);
  if (it == o.gens.end()) return 0;
  it->second.runtime_closes = true;
  return it->second.gen;
}

bool FdAwaitsRuntimeClose(int fd) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto it = o.gens.find(fd);
  return it != o.gens.end() && it->second.runtime_closes && !it->second.closing;
}

void FdRuntimeClosing(int fd, uint64_t registration) {
  if (registration == 0) return;
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto it = o.gens.find(fd);
  if (it != o.gens.end() && it->second.gen == registration && it->second.runtime_closes) it->second.closing = true;
}

void FdReleaseHolder(uint64_t holder, std::vector<int>* to_close) {
  if (holder == 0) return;
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (auto it = o.gens.begin(); it != o.gens.end();) {
    if (it->second.holder != holder) {
      ++it;
    } else if (it->second.runtime_closes) {
      ClosePlaceholderLocked(it->first, it->second);
      it = o.gens.erase(it);
      o.count.fetch_sub(1, std::memory_order_relaxed);
    } else {
      it->second.holder = 0;
      to_close->push_back(it->first);
      ++it;
    }
  }
}

int FdDupCloexec(int fd) {
  OwnedFdsLock lock;  // made and its install noted as one step
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);  // installed: FdInstalled below
  return FdInstalled(r < 0 ? -errno : r);
}

namespace {

std::atomic<int> g_floor{-1};
// The highest floor seen. While the floor is below it (the soft limit was
// lowered, e.g. by a test of what happens at the limit), it is read again
// on every use, so that it comes back up as soon as the limit does; a
// process whose limit never drops pays nothing.
std::atomic<int> g_highest_floor{-1};

int ComputeFloor() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rlim_t half = rl.rlim_cur == RLIM_INFINITY ? static_cast<rlim_t>(kFdFloorCap) : rl.rlim_cur / 2;
  int floor = half < static_cast<rlim_t>(kFdFloorCap) ? static_cast<int>(half) : kFdFloorCap;
  if (floor > g_highest_floor.load(std::memory_order_relaxed)) g_highest_floor.store(floor, std::memory_order_relaxed);
  g_floor.store(floor, std::memory_order_relaxed);
  return floor;
}

// Duplicates each fd at or above `start`, all or none: the duplicates are
// owned here until every one is made.
int DupAllFrom(const int* fds, size_t n, int start, int* out) {
  UniqueFds made;
  made.reserve(n);
  for (size_t i = 0; i < n; i++) {
    UniqueFd d(fcntl(fds[i], F_DUPFD_CLOEXEC, start));  // installed: FdDupAllHigh's MarkNew, under its lock
    if (!d) return -errno;
    made.push_back(std::move(d));
  }
  made.release_into(out);
  return 0;
}

int DupAllHighUnregistered(const int* fds, size_t n, int min_fd, int* out);

}  // namespace

int FdFloor() {
  int floor = g_floor.load(std::memory_order_relaxed);
  return floor >= 0 && floor >= g_highest_floor.load(std::memory_order_relaxed) ? floor : ComputeFloor();
}

int FdDupHigh(int fd) {
  int out;
  int r = FdDupAllHigh(&fd, 1, 0, &out);
  return r < 0 ? r : out;
}

int FdDupAllHigh(const int* fds, size_t n, int min_fd, int* out) {
  OwnedFdsLock lock;  // made and registered as one step
  int r = DupAllHighUnregistered(fds, n, min_fd, out);
  if (r == 0) MarkNew(out, n);
  return r;
}

namespace {

// Gives a thread's scratch list's room back once it has grown past `kept`
// entries (a batch larger than a message's): kept from one call to the
// next, it would otherwise hold the largest batch's room for good.
template <typename T>
void TrimScratch(std::vector<T>* list, size_t kept) {
  if (list->capacity() > kept) std::vector<T>().swap(*list);
}

// The most entries a thread's scratch list of given copies keeps room for
// between calls (MarkGiven): a message's worth.
constexpr size_t kKeptGivenReads = 256;

// Marks the registrations `gens` (fds[i]'s when looked up, 0 for none) as
// copies given to `owner`'s ledger, each with its file as it is now. The
// files are read outside the registry's lock (one statx each, which asks no
// filesystem: FdFileIdentity), the registrations looked at again under it:
// one the number no longer has (its fd was closed by someone else, and a
// new fd of ours took the number: a registration of its own, never reused)
// is not marked, and the file read was not its. Returns how many were
// marked.
size_t MarkGiven(const int* fds, size_t n, uint64_t owner, const uint64_t* gens) {
  struct Read {
    bool known;
    FdIdentity file;
  };
  thread_local std::vector<Read> reads;
  reads.resize(n);
  for (size_t i = 0; i < n; i++) {
    if (gens[i] != 0) reads[i].known = FdFileIdentity(fds[i], &reads[i].file) == 0;
  }
  size_t marked = 0;
  {
    OwnedFds& o = TheOwnedFds();
    std::lock_guard<std::recursive_mutex> lock(o.mu);
    for (size_t i = 0; i < n; i++) {
      if (gens[i] == 0) continue;
      auto it = o.gens.find(fds[i]);
      if (it == o.gens.end() || it->second.gen != gens[i]) continue;
      it->second.given_to = owner;
      it->second.file_known = reads[i].known;
      it->second.file = reads[i].file;
      marked++;
    }
  }
  TrimScratch(&reads, kKeptGivenReads);
  return marked;
}

// The registration each of fds[0..n) has now (0 for none), into `gens`.
void ReadGens(const int* fds, size_t n, std::vector<uint64_t>* gens) {
  gens->resize(n);
  FdRegistrations(fds, n, gens->data());
}

}  // namespace

int FdGivenFiles(const int* fds, size_t n, uint64_t owner, FdIdentity* files) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) {
    auto it = o.gens.find(fds[i]);
    if (it == o.gens.end() || it->second.given_to != owner || !it->second.file_known) return -EBADF;
    files[i] = it->second.file;
  }
  return 0;
}

void FdRegistrations(const int* fds, size_t n, uint64_t* out) {
  OwnedFds& o = TheOwnedFds();
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  for (size_t i = 0; i < n; i++) {
    auto it = o.gens.find(fds[i]);
    out[i] = it == o.gens.end() ? 0 : it->second.gen;
  }
}

int FdDupAllGiven(const int* fds, size_t n, int min_fd, uint64_t owner, int* out) {
  thread_local std::vector<uint64_t> gens;
  {
    // The caller's numbers checked (FdRefuseOwned), the copies made and
    // registered (FdDupAllHigh) and their registrations read, as one step:
    // no copy is anyone else's yet.
    OwnedFdsLock lock;
    int r = FdRefuseOwned(fds, n);
    if (r == 0) r = FdDupAllHigh(fds, n, min_fd, out);
    if (r != 0) return r;
    ReadGens(out, n, &gens);
  }
  // A second hold of the lock, to mark them (MarkGiven): their files can
  // only be read once they exist, and reading them in the first hold would
  // make every other thread's dup and close wait out a batch's statx
  // (about 0.9 us each, up to 253 a batch, against an uncontended lock's
  // 9 ns: docs/benchmarks.md).
  MarkGiven(out, n, owner, gens.data());
  TrimScratch(&gens, kKeptGivenReads);
  return 0;
}

int FdDupCallersFds(const int* fds, size_t n, int min_fd, uint64_t owner, int* out) {
  // Not under a lock of ours: FdDupAllGiven checks in its own, and reads
  // the copies' files after it (the lock is recursive: one held here would
  // be held across those reads).
  if (owner != 0) return FdDupAllGiven(fds, n, min_fd, owner, out);
  OwnedFdsLock lock;
  int r = FdRefuseOwned(fds, n);
  if (r != 0) return r;
  return FdDupAllHigh(fds, n, min_fd, out);
}

size_t FdMarkGiven(const int* fds, size_t n, uint64_t owner) {
  thread_local std::vector<uint64_t> gens;
  ReadGens(fds, n, &gens);
  size_t marked = MarkGiven(fds, n, owner, gens.data());
  TrimScratch(&gens, kKeptGivenReads);
  return marked;
}

bool FdIsGiven(int fd, uint64_t owner) {
  OwnedFds& o = TheOwnedFds();
  if (o.count.load(std::memory_order_relaxed) == 0) return false;
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto it = o.gens.find(fd);
  return it != o.gens.end() && it->second.given_to == owner;
}

namespace {

int DupAllHighUnregistered(const int* fds, size_t n, int min_fd, int* out) {
  int floor = FdFloor();
  int r = DupAllFrom(fds, n, min_fd > floor ? min_fd : floor, out);
  // EINVAL: the start is at or above the soft limit. The limit was lowered
  // since the floor was read, or the list holds an fd just under the limit.
  if (r != -EINVAL) return r;
  // Either way, start again from the floor, having checked every fd first
  // so that none of our duplicates can stand in for a closed one further on.
  floor = ComputeFloor();
  for (size_t i = 0; i < n; i++) {
    if (fcntl(fds[i], F_GETFD) < 0) return -errno;
  }
  return DupAllFrom(fds, n, floor, out);
}

}  // namespace

namespace {

// FdRegistration, and marks the registration as being closed by fdbridge
// (MarkNewLocked: a new fd of ours at the number once the close has freed
// it is not a close by someone else).
uint64_t BeginClose(int fd) {
  OwnedFds& o = TheOwnedFds();
  if (o.count.load(std::memory_order_relaxed) == 0) return 0;
  std::lock_guard<std::recursive_mutex> lock(o.mu);
  auto it = o.gens.find(fd);
  if (it == o.gens.end()) return 0;
  it->second.closing = true;
  return it->second.gen;
}

}  // namespace

namespace {

// FdClose once BeginClose has given `registration`.
int CloseRegistered(int fd, uint64_t registration) {
  // Unregistered only after the close: until then the number is ours, and
  // a caller naming it must still be refused. (Between the two a number
  // just opened by another thread may be refused once; never is one of
  // ours accepted.)
  int r = close(fd) == 0 || errno == EINTR ? 0 : -errno;
  // EBADF for a number still registered as ours: someone else closed it.
  if (r == -EBADF) FdClosedByOther(fd, registration);
  else FdDisownRegistration(fd, registration);
  return r;
}

}  // namespace

int FdClose(int fd) { return CloseRegistered(fd, BeginClose(fd)); }

int FdCloseCallers(const int* fds, size_t n, size_t* closed, size_t* refused, int* first_error) {
  OwnedFds& o = TheOwnedFds();
  *closed = 0;
  *first_error = 0;
  // The numbers, each marked as being closed (MarkNumberClosingLocked) with
  // its mark's token: closed with the lock let go, since the close of a
  // number calls its file's flush even when it is not the last reference
  // (`high` holds it), and a FUSE file's waits for its server. Until the
  // close frees the number, no close of fdbridge's takes it
  // (BeingClosedLocked), and an fd put there once it is freed is not this
  // file. A number that could not be moved (no number free above the
  // floor: EMFILE) is marked all the same, without a copy (its install
  // generation and file): unmarked, another thread's close of it after
  // this look would pass its own look too, and the second of the two
  // closes would close whatever fd of fdbridge's took the freed number
  // between them (the only free number at or above the floor then).
  std::vector<std::pair<int, uint64_t>> moved;
  moved.reserve(n);
  // moved[k]'s copy above the floor, closed after it (its close counts the
  // number's), or -1 for a number that could not be moved.
  std::vector<int> copies;
  copies.reserve(n);
  {
    std::lock_guard<std::recursive_mutex> lock(o.mu);
    for (size_t i = 0; i < n; i++) {
      if (o.gens.count(fds[i]) != 0 || (!o.loop_starts.empty() && MayBeStartingLoopFd(o, fds[i]))) {
        *refused = i;
        return -EBADF;
      }
    }
    for (size_t i = 0; i < n; i++) {
      // A number whose close is under way (another thread's, or this list
      // names it twice): closed already, as a number not open. So is one
      // registered now: none was at the first look, in this same hold of
      // the lock, so it is the copy above the floor of an earlier entry,
      // made here at a number that was free (not the caller's to close).
      if (o.gens.count(fds[i]) != 0 || BeingClosedLocked(o, fds[i])) {
        if (*first_error == 0) *first_error = -EBADF;
        continue;
      }
      int high = fds[i] < 0 ? -1 : fcntl(fds[i], F_DUPFD_CLOEXEC, FdFloor());  // installed: MarkNewLocked below
      if (high >= 0) {
        MarkNewLocked(o, &high);
        moved.emplace_back(fds[i], MarkNumberClosingLocked(o, fds[i], high));
        copies.push_back(high);
      } else if (fds[i] >= 0 && errno != EBADF) {
        moved.emplace_back(fds[i], MarkNumberClosingLocked(o, fds[i], -1));
        copies.push_back(-1);
      } else if (*first_error == 0) {
        *first_error = -EBADF;  // not open
      }
    }
  }
  for (size_t k = 0; k < moved.size(); k++) {
    // Frees the number, then flushes: may wait on the file's filesystem.
    // EINTR: released all the same.
    int r = close(moved[k].first) == 0 || errno == EINTR ? 0 : -errno;
    if (copies[k] >= 0) continue;  // counted by its copy's close
    if (r == 0) (*closed)++;
    else if (*first_error == 0) *first_error = r;
  }
  EndNumberCloses(moved);
  for (int fd : copies) {
    if (fd < 0) continue;
    int r = FdClose(fd);
    if (r == 0) (*closed)++;
    else if (*first_error == 0) *first_error = r;
  }
  return 0;
}

namespace {

// The background closer (fd_ops.h): a pool of detached threads, started on
// first use and never joined (they hold nothing but the queues; at exit the
// kernel closes whatever is left). Everything below is under `mu` except
// the atomic counters, which are read without it.
struct Closer {
  struct Job {
    int fd;
    uint64_t ticket;
    bool peer_fd;
    uint64_t registration;  // its registration when handed over (0: none): see CloseMayBlock
    // Its file when handed over (HandOverIdentity), or as it was given
    // (a registration that kept it: TakeRegistration): `open` false when
    // the number was closed already then, `known` false when that could
    // not be read (the close then goes ahead unchecked).
    bool open;
    bool known;
    FdIdentity identity;
    // closeClientFds's: the number's install generation the command held
    // it with (FdInstallGenerations), looked at again just before the close.
    bool check_install;
    uint64_t install;
  };
  // One owner's closes waiting, and how many of its closes run now.
  struct Lane {
    std::deque<Job> jobs;
    size_t busy = 0;
    bool listed = false;  // in `turns`
    // Of its jobs, those that close a socket of ours (not a peer's fd):
    // waiting in `jobs`, and being closed now.
    size_t own_queued = 0;
    size_t own_running = 0;
  };
  // A batch not yet done: its fds still open, and who waits for it.
  struct Batch {
    size_t left;
    std::vector<std::function<void()>> waiters;
  };

  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<uint64_t, Lane> lanes;
  // Owners with a close waiting and a thread to spare (busy below
  // CloserThreadsFor(owner)), each once, in the order they take turns
  // (NextTurnLocked).
  std::deque<uint64_t> turns;
  std::unordered_map<uint64_t, Batch> batches;
  uint64_t issued = 0;  // the last ticket given
  size_t threads = 0;
  size_t idle = 0;  // threads waiting for work
  uint64_t made = 0;  // threads ever started (a test tells a thread woken from one made)
  size_t busy = 0;  // threads in a close
  size_t owners_reserved = 0;  // FdReserveCloserThreads
  size_t reserve = kCloserReserveThreads;  // from owners_reserved
  std::atomic<size_t> pending{0};
  std::atomic<size_t> pending_peer_fds{0};
  // Under mu: of those, each owner's (owners with none left out).
  std::unordered_map<uint64_t, size_t> peer_fds_by_owner;
  std::atomic<uint64_t> done{0};
  // The fds taken by a thread whose close has not returned (a number may be
  // in twice: its close already took it out of the table, and a new fd of
  // ours that took it is queued).
  std::unordered_map<int, size_t> running_fds;
};

// Threads beyond the first exit after this long without work.
constexpr auto kCloserIdleExit = std::chrono::seconds(30);
// The most jobs a thread's scratch list keeps room for between batches
// (FdCloseInBackground): a message's worth; a larger batch (a ledger swept
// at a connection's close) gives its room back once it is queued.
constexpr size_t kKeptJobs = 256;

Closer& TheCloser() {
  static Closer* closer = new Closer();  // never destroyed: its threads may outlive static destructors
  return *closer;
}

void ListLocked(Closer& c, uint64_t owner, Closer::Lane& lane) {
  if (!lane.listed && !lane.jobs.empty() && lane.busy < CloserThreadsFor(owner)) {
    c.turns.push_back(owner);
    lane.listed = true;
  }
}

// Where in c.turns the owner is whose close a free thread takes next: the
// first in turn while a shared thread is to spare; while the shared ones
// are all in a close, the first with no close running (a reserve thread),
// so that owners whose closes block, however many threads they fill,
// never hold back one whose closes do not; c.turns.size() for none.
// Under c.mu.
size_t NextTurnLocked(const Closer& c) {
  if (c.busy < kMaxCloserThreads) return 0;  // c.turns.size() when empty
  if (c.busy >= kMaxCloserThreads + c.reserve) return c.turns.size();
  size_t i = 0;
  while (i < c.turns.size() && c.lanes.at(c.turns[i]).busy != 0) i++;
  return i;
}

bool HasTurnLocked(const Closer& c) { return NextTurnLocked(c) < c.turns.size(); }

// CloseMayBlock of a closeClientFds job. In one hold of the registry's
// lock: the number has no registration, its install generation is still
// the one the command held it with (another install there since is
// another's fd: the command closed its own after handing it over), it is
// not being closed already (BeingClosedLocked), and it holds the file
// handed over; then the file gets a copy above the floor (F_DUPFD_CLOEXEC,
// registered as ours; none with no number free there, EMFILE) and the
// number is marked as being closed (MarkNumberClosingLocked). The number's
// close comes once the lock is let go: a close calls the file's flush on
// every close, not only the last reference's, and a FUSE server that does
// not answer holds it. No fd put at the number after the look can be
// closed in its place: only a close can change the number's file, and
// fdbridge's own closes of it find it marked. The copy's close, the last
// reference's, comes after.
void CloseClientFd(const Closer::Job& job) {
  int fd = job.fd;
  int high;
  uint64_t token;
  {
    OwnedFds& o = TheOwnedFds();
    std::lock_guard<std::recursive_mutex> lock(o.mu);
    if (o.gens.count(fd) != 0 || InstallLocked(o, fd) != job.install) return;
    // Another close of this very file at the number is under way (a close
    // of fdbridge's that it waits on): this job's is that one.
    if (BeingClosedLocked(o, fd)) return;
    if (job.known) {
      FdIdentity now;  // statx AT_STATX_DONT_SYNC: asks no filesystem
      if (FdFileIdentity(fd, &now) != 0 || !SameFile(now, job.identity)) return;
    }
    high = fcntl(fd, F_DUPFD_CLOEXEC, FdFloor());  // installed: MarkNewLocked below
    if (high >= 0) MarkNewLocked(o, &high);
    token = MarkNumberClosingLocked(o, fd, high);
  }
  // With the lock let go: the close of the number calls the file's flush
  // even when `high` holds it, and a FUSE file's waits for its server.
  // Until the number is freed, a close of fdbridge's that would take it
  // finds it being closed (BeingClosedLocked); an fd put there once it is
  // freed is another file (kcmp), or another install.
  close(fd);  // EINTR: released all the same
  EndNumberCloses({{fd, token}});
  if (high >= 0) FdClose(high);
}

// close(2) takes the number out of the table before the part that can
// block (the release of the file's last reference), but FdClose unregisters
// one of ours only once close returns: were that close blocked, the number
// would stay refused (EBADF, OwnedFdsLock) to whatever fd of the caller's
// takes it next, for as long as the close blocks. So an fd of ours below the
// floor is first moved above it, where the caller's fds do not go (closing
// the low number then drops no last reference and cannot block), and the
// close that may block is the copy's.
//
// An fd the program closed behind the closer's back (before its hand-over
// or since) is not closed again: the number is someone else's now, or
// nobody's. One of ours is found so by its registration (a new fd of ours
// took the number: FdStillHeld) or, as any other, by its file (the one at
// the number now, read here, off the event loop, is not the one handed
// over); one of ours found so ends as closed by someone else
// (FdClosedByOther, noted while a leak check watches).
//
// An fd that was not ours when handed over is not ours now either (a new fd
// of ours at the number would be another file): closed with no look at the
// registry. One of ours is looked up once before its close (StillHeld, which
// marks it as being closed) and once after (its unregistration).
void CloseMayBlock(const Closer::Job& job) {
  int fd = job.fd;
  uint64_t registration = job.registration;
  if (!job.open) {
    FdClosedByOther(fd, registration);
    return;
  }
  if (registration == 0) {
    // None when handed over, one now: the fd handed over was closed by
    // someone else (the kernel gives a number only once it is free) and a
    // new fd of ours took the number, which is not this close's.
    if (job.check_install) {
      CloseClientFd(job);
      return;
    }
    if (FdRegistration(fd) != 0) return;
    if (!job.known) {
      FdClose(fd);  // nothing known of the file: as any close
      return;
    }
    if (FdHoldsFile(fd, job.identity)) {
      close(fd);  // EINTR: released all the same (FdClose)
    }
    return;
  }
  bool current = false;
  if (!StillHeld(fd, registration, job.known ? &job.identity : nullptr, &current)) return;
  if (!current) {
    FdClose(fd);  // its registration ended otherwise: as any close
    return;
  }
  if (fd < FdFloor()) {
    int high = FdDupHigh(fd);
    if (high >= 0) {
      CloseRegistered(fd, registration);
      fd = high;
      registration = BeginClose(high);
    }
  }
  CloseRegistered(fd, registration);
}

// Closes `job.fd` (the call that may block, outside the lock), then settles
// its batch and runs the waiters it completed.
void RunJob(Closer& c, uint64_t owner, const Closer::Job& job) {
  CloseMayBlock(job);
  c.done++;
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    // Counted down under the lock with the owner's count, so that the two
    // never disagree for a reader that takes it.
    if (job.peer_fd) {
      c.pending_peer_fds--;
      auto by = c.peer_fds_by_owner.find(owner);
      if (--by->second == 0) c.peer_fds_by_owner.erase(by);
    }
    c.pending--;
    auto running = c.running_fds.find(job.fd);
    if (--running->second == 0) c.running_fds.erase(running);
    auto lane = c.lanes.find(owner);
    if (!job.peer_fd) lane->second.own_running--;
    lane->second.busy--;
    ListLocked(c, owner, lane->second);
    if (lane->second.jobs.empty() && lane->second.busy == 0) c.lanes.erase(lane);
    auto b = c.batches.find(job.ticket);
    if (--b->second.left == 0) {
      ready = std::move(b->second.waiters);
      c.batches.erase(b);
    }
  }
  for (auto& then : ready) then();
}

// Takes the next close in the owners' turn order (NextTurnLocked). Under
// c.mu; HasTurnLocked(c).
std::pair<uint64_t, Closer::Job> TakeLocked(Closer& c) {
  size_t next = NextTurnLocked(c);
  uint64_t owner = c.turns[next];
  c.turns.erase(c.turns.begin() + static_cast<std::ptrdiff_t>(next));
  Closer::Lane& lane = c.lanes[owner];
  lane.listed = false;
  Closer::Job job = lane.jobs.front();
  lane.jobs.pop_front();
  lane.busy++;
  c.running_fds[job.fd]++;
  if (!job.peer_fd) {
    lane.own_queued--;
    lane.own_running++;
  }
  ListLocked(c, owner, lane);  // to the back of the turns: owners alternate
  return {owner, job};
}

void SpawnLocked(Closer& c);

// A thread counts as idle from its creation (SpawnLocked) until it takes
// work, and again once that is done: a burst of work finds the threads just
// made for it idle, and makes no more.
void* CloserThread(void* arg) {
  pthread_setname_np(pthread_self(), kCloserThreadName);  // for /proc/<pid>/task/*/comm
  Closer& c = *static_cast<Closer*>(arg);
  std::unique_lock<std::mutex> lock(c.mu);
  for (;;) {
    bool work = c.cv.wait_for(lock, kCloserIdleExit, [&c] { return HasTurnLocked(c); });
    if (!work) {
      if (c.threads > 1) break;
      continue;
    }
    c.idle--;
    auto next = TakeLocked(c);
    c.busy++;
    // This close may block: whatever else can run needs a thread of its
    // own, an idle one woken (FdCloseInBackground woke one thread for a
    // whole batch: this one) or, with none idle, a new one.
    if (HasTurnLocked(c)) {
      if (c.idle == 0) {
        SpawnLocked(c);
      } else {
        c.cv.notify_one();
      }
    }
    lock.unlock();
    RunJob(c, next.first, next.second);
    lock.lock();
    c.busy--;
    c.idle++;
  }
  c.idle--;
  c.threads--;
  return nullptr;
}

// One more thread, unless at the cap (then the work waits for a thread to
// come free: see fd_ops.h). Called only while a close can be taken
// (HasTurnLocked) and no thread is idle: past kMaxCloserThreads that is
// an owner's with no close running, which the reserve is for. Under c.mu.
void SpawnLocked(Closer& c) {
  if (c.threads >= kMaxCloserThreads + c.reserve) return;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, kCloserThreadStack);
  pthread_t t;
  if (pthread_create(&t, &attr, CloserThread, &c) == 0) {
    c.threads++;
    c.idle++;
    c.made++;
  }
  // Else (EAGAIN: RLIMIT_NPROC or TasksMax reached) the work waits for the
  // threads there are; with none at all, FdCloseInBackground closes it itself.
  pthread_attr_destroy(&attr);
}

// The file at `fd` as it is handed over (Closer::Job), on the event loop of
// whoever hands it over: FdFileIdentity asks no filesystem.
void HandOverIdentity(Closer::Job* job) {
  int r = FdFileIdentity(job->fd, &job->identity);
  job->open = r != -EBADF;
  job->known = r == 0;
}

// The job's registration, read from `reg` (the one its fd has at the
// hand-over): one with its file recorded as it was made (FdDupAllGiven) is
// checked against that file, not the one at the number now, which may be
// a file the program opened there after closing ours.
void TakeRegistration(Closer::Job* job, OwnedFds::Registration* reg) {
  reg->holder = 0;
  job->registration = reg->gen;
  if (reg->file_known) {
    job->open = true;
    job->known = true;
    job->identity = reg->file;
  }
}

// FdCloseInBackground and FdCloseGivenInBackground: `given_to` not 0, only
// the fds whose registration was given to that ledger (FdDupAllGiven,
// FdMarkGiven) are queued.
// `refused`: not null, a number fdbridge holds for itself now (a
// registration there), or, with `expected`, one whose expected[i] is set and
// that holds another file (or none), is refused: nothing is handed over,
// *refused is that number and the ticket 0 (else *refused is -1).
// With `installs` too, one whose number's install generation is not
// installs[i] (an fd fdbridge's native code put there since the command
// took it: FdInstalled) is refused the same way.
uint64_t HandOver(const int* fds, size_t n, uint64_t owner, bool held_for_peer, uint64_t given_to, int* refused = nullptr,
                  const std::optional<FdIdentity>* expected = nullptr, const uint64_t* installs = nullptr) {
  bool given = given_to != 0;
  if (refused != nullptr) *refused = -1;
  if (n == 0) return 0;
  // The closer's now, whatever environment asked; each with its file as it
  // is now (as it was made, for a given copy) and the registration it has
  // now, which its close checks (CloseMayBlock). The jobs go into a list of
  // this thread's kept from one batch to the next (a log line's fd is a
  // batch of one): no allocation once it has grown, up to kKeptJobs. The
  // closer's lock is taken inside the registry's, the order in which a
  // caller that holds an OwnedFdsLock takes them too.
  thread_local std::vector<Closer::Job> jobs;
  jobs.resize(n);
  OwnedFds& o = TheOwnedFds();
  std::unique_lock<std::recursive_mutex> registry(o.mu, std::defer_lock);
  // A refused number ends the hand-over, nothing handed over (under the
  // registry's lock).
  auto refuse = [&](int fd) -> uint64_t {
    *refused = fd;
    registry.unlock();
    TrimScratch(&jobs, kKeptJobs);
    return 0;
  };
  if (given) {
    // A copy whose number has another registration now, or none, was
    // closed by someone else: the number is not the ledger's to close. The
    // others are checked against the file they were given with: no file is
    // read here.
    registry.lock();
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
      auto it = o.gens.find(fds[i]);
      if (it == o.gens.end() || it->second.given_to != given_to) continue;
      Closer::Job& job = jobs[kept++];
      job.fd = fds[i];
      job.peer_fd = held_for_peer;
      job.open = true;
      job.known = false;
      job.check_install = false;
      TakeRegistration(&job, &it->second);
    }
    jobs.resize(kept);
    n = kept;
    if (n == 0) {
      TrimScratch(&jobs, kKeptJobs);
      return 0;
    }
  } else {
    // The registrations handed over are the ones the numbers have now. Each
    // fd's file is read after that, outside the registry's lock (every
    // other thread's dup and close would wait for a whole batch's statx:
    // docs/benchmarks.md), and the registration looked at again under it: the same
    // one, and the file read meanwhile was that registration's (a new fd of
    // ours at the number would have a registration of its own: the numbers
    // are never reused). Another one, or one where there was none: the fd
    // handed over was closed by someone else and a new fd of ours took the
    // number, which is left alone (as if closed before the hand-over: the
    // old registration ends as closed by someone else if it has not ended
    // already). FdFileIdentity asks no filesystem (HandOverIdentity).
    // A registration that kept its file as it was made or received (a
    // given copy's: FdDupAllGiven, FdMarkGiven) is checked against that
    // file (TakeRegistration), so its fd's file is not read again: the job
    // takes the kept one at the first look.
    registry.lock();
    for (size_t i = 0; i < n; i++) {
      Closer::Job& job = jobs[i];
      job.fd = fds[i];
      job.peer_fd = held_for_peer;
      job.check_install = installs != nullptr;
      job.install = installs != nullptr ? installs[i] : 0;
      auto it = o.gens.find(job.fd);
      job.registration = it == o.gens.end() ? 0 : it->second.gen;
      if (refused != nullptr && job.registration != 0) return refuse(job.fd);
      job.known = job.registration != 0 && it->second.file_known;
      if (job.known) {
        job.open = true;
        job.identity = it->second.file;
      }
    }
    registry.unlock();
    for (size_t i = 0; i < n; i++) {
      if (!jobs[i].known) HandOverIdentity(&jobs[i]);
    }
    registry.lock();
    for (size_t i = 0; i < n; i++) {
      Closer::Job& job = jobs[i];
      auto it = o.gens.find(job.fd);
      uint64_t now = it == o.gens.end() ? 0 : it->second.gen;
      if (refused != nullptr) {
        // A registration made at the number since the first look (its fd
        // was closed, a new fd of ours took it), a file other than the one
        // expected there, or another install there than the one the
        // command held (an fd fdbridge put there since, of any file: the
        // command closed its own, and the number is another's): not the
        // caller's to close. Under the lock every install notes itself
        // under (FdInstalled): none is half made.
        const std::optional<FdIdentity>* want = expected != nullptr ? &expected[i] : nullptr;
        bool other_file = want != nullptr && want->has_value() &&
                          (!job.known || !SameFile(job.identity, **want));
        bool other_install = job.check_install && InstallLocked(o, job.fd) != job.install;
        if (now != 0 || other_file || other_install) return refuse(job.fd);
      }
      if (now != job.registration) {
        job.open = false;
        job.known = false;
      } else if (it != o.gens.end()) {
        TakeRegistration(&job, &it->second);
      }
    }
  }
  Closer& c = TheCloser();
  uint64_t ticket;
  bool no_thread;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.pending += n;
    if (held_for_peer) {
      c.pending_peer_fds += n;
      c.peer_fds_by_owner[owner] += n;
    }
    ticket = ++c.issued;
    c.batches[ticket].left = n;
    Closer::Lane& lane = c.lanes[owner];
    if (!held_for_peer) lane.own_queued += n;
    for (Closer::Job& job : jobs) {
      job.ticket = ticket;
      lane.jobs.push_back(job);
    }
    registry.unlock();
    TrimScratch(&jobs, kKeptJobs);
    ListLocked(c, owner, lane);
    // Work another thread can take, and none free to take it.
    if (HasTurnLocked(c) && c.idle == 0) SpawnLocked(c);
    no_thread = c.threads == 0;
    if (!no_thread) c.cv.notify_one();
  }
  if (no_thread) {
    // No thread could be made, and none runs: closing here may block this
    // thread, but an fd is never left behind.
    for (;;) {
      std::pair<uint64_t, Closer::Job> next;
      {
        std::lock_guard<std::mutex> lock(c.mu);
        if (!HasTurnLocked(c)) break;
        next = TakeLocked(c);
      }
      RunJob(c, next.first, next.second);
    }
  }
  return ticket;
}

}  // namespace

uint64_t FdCloseInBackground(const int* fds, size_t n, uint64_t owner, bool held_for_peer) {
  return HandOver(fds, n, owner, held_for_peer, /*given_to=*/0);
}

uint64_t FdCloseGivenInBackground(const int* fds, size_t n, uint64_t owner, uint64_t given_to) {
  return HandOver(fds, n, owner, /*held_for_peer=*/true, given_to != 0 ? given_to : owner);
}

namespace {

// A number fds[0..n) names more than once, or -1. Sorted in a list of this
// thread's kept from one call to the next (closeClientFds of one log fd is
// a list of one, which needs none).
int RepeatedFd(const int* fds, size_t n) {
  if (n < 2) return -1;
  thread_local std::vector<int> sorted;
  sorted.assign(fds, fds + n);
  std::sort(sorted.begin(), sorted.end());
  auto at = std::adjacent_find(sorted.begin(), sorted.end());
  int repeated = at == sorted.end() ? -1 : *at;
  TrimScratch(&sorted, kKeptJobs);
  return repeated;
}

}  // namespace

int FdCloseClientFdsInBackground(const int* fds, size_t n, uint64_t owner, const std::optional<FdIdentity>* expected,
                                 const uint64_t* installs, uint64_t* ticket, int* refused) {
  // A number named twice would be closed twice, one close after the other
  // on the closer's threads: after the first, any new fd (another
  // connection's copy, another client's, the program's file) can take the
  // number, and the second close would close it. Such a list is refused
  // whole, nothing handed over.
  int repeated = RepeatedFd(fds, n);
  if (repeated >= 0) {
    *ticket = 0;
    *refused = repeated;
    return -EINVAL;
  }
  *ticket = HandOver(fds, n, owner, /*held_for_peer=*/true, /*given_to=*/0, refused, expected, installs);
  return *refused >= 0 ? -EBADF : 0;
}

bool FdBackgroundCloseIssued(uint64_t ticket) {
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  return ticket <= c.issued;
}

bool FdBackgroundCloseDone(uint64_t ticket) {
  if (ticket == 0) return true;
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  return ticket <= c.issued && c.batches.count(ticket) == 0;
}

void FdDropDoneTickets(std::vector<uint64_t>* tickets) {
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  size_t kept = 0;
  for (uint64_t t : *tickets) {
    if (c.batches.count(t) != 0) (*tickets)[kept++] = t;
  }
  tickets->resize(kept);
}

std::vector<uint64_t> FdOpenBackgroundCloses() {
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  std::vector<uint64_t> open;
  open.reserve(c.batches.size());
  for (const auto& b : c.batches) open.push_back(b.first);
  return open;
}

void FdAfterBackgroundCloses(const uint64_t* tickets, size_t n, std::function<void()> then) {
  Closer& c = TheCloser();
  // Counts down the batches still open; the last one to finish runs `then`.
  struct Joint {
    std::atomic<size_t> left{0};
    std::function<void()> then;
  };
  auto joint = std::make_shared<Joint>();
  joint->then = std::move(then);
  {
    std::lock_guard<std::mutex> lock(c.mu);
    size_t open = 0;
    for (size_t i = 0; i < n; i++) {
      auto b = c.batches.find(tickets[i]);
      if (b == c.batches.end()) continue;
      b->second.waiters.emplace_back([joint] {
        if (--joint->left == 0) joint->then();
      });
      open++;
    }
    // No batch can finish before the lock is released, so the count is
    // set before any of the waiters above can run.
    joint->left = open;
    if (open > 0) return;
  }
  joint->then();
}

size_t FdBackgroundClosesPending() { return TheCloser().pending.load(); }

uint64_t FdNewCloseOwner() {
  static std::atomic<uint64_t> last{kTeardownOwner};
  return ++last;
}

void FdBackgroundCloseFds(std::vector<int>* queued, std::vector<int>* running) {
  queued->clear();
  running->clear();
  Closer& c = TheCloser();
  if (c.pending.load() == 0) return;
  std::lock_guard<std::mutex> lock(c.mu);
  for (const auto& lane : c.lanes) {
    for (const Closer::Job& job : lane.second.jobs) queued->push_back(job.fd);
  }
  for (const auto& fd : c.running_fds) running->push_back(fd.first);
}

size_t FdBackgroundClosesOfPeerFds() { return TheCloser().pending_peer_fds.load(); }

size_t FdBackgroundClosesOfPeerFds(uint64_t owner) {
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  auto by = c.peer_fds_by_owner.find(owner);
  return by == c.peer_fds_by_owner.end() ? 0 : by->second;
}

namespace {

// A lane's own sockets held up: all of them once its closes have no thread
// to spare (every one its owner may use is in a close; or it has one in a
// close while the shared threads all are; or the reserve's are too), as
// when they block; else none (a free thread takes each at once). Under c.mu.
size_t OwnSocketsHeldUpLocked(const Closer& c, uint64_t owner, const Closer::Lane& lane) {
  bool shared_full = c.busy >= kMaxCloserThreads;
  bool stuck = lane.busy >= CloserThreadsFor(owner) || (shared_full && lane.busy > 0) ||
               c.busy >= kMaxCloserThreads + c.reserve;
  return stuck ? lane.own_queued + lane.own_running : 0;
}

}  // namespace

size_t FdBackgroundClosesOfOwnSockets() {
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  size_t n = 0;
  for (const auto& lane : c.lanes) n += OwnSocketsHeldUpLocked(c, lane.first, lane.second);
  return n;
}

size_t FdBackgroundClosesOfOwnSockets(uint64_t owner) {
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  auto lane = c.lanes.find(owner);
  return lane == c.lanes.end() ? 0 : OwnSocketsHeldUpLocked(c, owner, lane->second);
}

uint64_t FdBackgroundClosesDone() { return TheCloser().done.load(); }

void FdCloserThreads(size_t* threads, size_t* busy, uint64_t* made) {
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  *threads = c.threads;
  *busy = c.busy;
  *made = c.made;
}

size_t FdReserveCloserThreads(int64_t owners) {
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  if (owners >= 0) {
    c.owners_reserved += static_cast<size_t>(owners);
  } else {
    size_t back = static_cast<size_t>(-owners);
    c.owners_reserved -= back < c.owners_reserved ? back : c.owners_reserved;
  }
  // Shrinking it only stops new threads being made: those running finish
  // their closes, and the idle ones exit in time (kCloserIdleExit).
  c.reserve = std::min(std::max(c.owners_reserved, kCloserReserveThreads), kMaxCloserReserveThreads);
  // Work that waited at the old cap may have a thread now.
  if (HasTurnLocked(c) && c.idle == 0) SpawnLocked(c);
  if (c.threads > 0) c.cv.notify_one();
  return c.reserve;
}

void FdCloserReserve(size_t* reserve, size_t* owners) {
  Closer& c = TheCloser();
  std::lock_guard<std::mutex> lock(c.mu);
  *reserve = c.reserve;
  *owners = c.owners_reserved;
}

int PollNow(int fd, short events) {
  struct pollfd p = {fd, events, 0};
  int r;
  do {
    r = poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  return r > 0 ? p.revents : 0;
}

int FdPollReadable(const int* fds, size_t n, std::vector<bool>* out) {
  std::vector<struct pollfd> p(n);
  for (size_t i = 0; i < n; i++) p[i] = {fds[i], POLLIN, 0};
  int r;
  do {
    r = poll(p.data(), p.size(), 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  out->assign(n, false);
  for (size_t i = 0; i < n; i++) (*out)[i] = (p[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) != 0;
  return r;
}

int FdFileIdentity(int fd, FdIdentity* out) {
  struct statx stx;
  if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_MODE | STATX_INO, &stx) != 0) return -errno;
  *out = {static_cast<uint64_t>(makedev(stx.stx_dev_major, stx.stx_dev_minor)), stx.stx_ino, stx.stx_mode};
  return 0;
}

bool FdFileGone(int fd, bool known, const FdIdentity& file) {
  // Not known: only whether the number is open, which fcntl tells at about
  // half a statx's cost.
  if (!known) return fcntl(fd, F_GETFD) < 0 && errno == EBADF;
  FdIdentity now;
  int r = FdFileIdentity(fd, &now);
  return r == -EBADF || (r == 0 && !SameFile(now, file));
}

int FdGetFlags(int fd) {
  int fdflags = fcntl(fd, F_GETFD);
  if (fdflags < 0) return -errno;
  int flflags = fcntl(fd, F_GETFL);
  if (flflags < 0) return -errno;
  return ((fdflags & FD_CLOEXEC) ? 1 : 0) | ((flflags & O_NONBLOCK) ? 2 : 0);
}

int FdSetCloexec(int fd, bool on) {
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) return -errno;
  int next = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (next != flags && fcntl(fd, F_SETFD, next) != 0) return -errno;
  return 0;
}

int FdSetNonblock(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -errno;
  int next = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (next != flags && fcntl(fd, F_SETFL, next) != 0) return -errno;
  return 0;
}

// The leak checker's view of tables (declared in fd_hold.h): here, beside
// FdList, which reads each entry's file with it.

int StartQuietThread(pthread_t* thread, void* (*main)(void*), void* arg) {
  pthread_attr_t attr;
  int r = pthread_attr_init(&attr);
  if (r != 0) return -r;
  size_t stack = 256 * 1024;
  if (stack < static_cast<size_t>(PTHREAD_STACK_MIN)) stack = static_cast<size_t>(PTHREAD_STACK_MIN);
  pthread_attr_setstacksize(&attr, stack);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  r = pthread_create(thread, &attr, main, arg);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
  return -r;
}


// The two lines come first (pos, flags, mnt_id, ino: fs/proc/fd.c
// seq_show), so the head of the file is enough; what follows (locks, an
// epoll's targets) can be long.
namespace {

// The file id ("mnt_id:ino") of the head of an fdinfo file read from `f`.
int ReadFileIdFrom(int f, std::string* out) {
  char buf[512];
  ssize_t len;
  do {
    len = read(f, buf, sizeof(buf) - 1);
  } while (len < 0 && errno == EINTR);
  if (len < 0) return -errno;
  buf[len] = '\0';
  const char* mnt = strstr(buf, "\nmnt_id:");
  const char* ino = strstr(buf, "\nino:");
  if (mnt == nullptr || ino == nullptr) return -ENODATA;
  char* end = nullptr;
  unsigned long long m = strtoull(mnt + 8, &end, 10);
  if (end == mnt + 8) return -ENODATA;
  unsigned long long i = strtoull(ino + 5, &end, 10);
  if (end == ino + 5) return -ENODATA;
  char id[48];
  snprintf(id, sizeof(id), "%llu:%llu", m, i);
  out->assign(id);
  return 0;
}

}  // namespace

namespace {

// Opens `name` in the directory `dir` with a number of this process's
// table, its install noted as one step with the open: an fd, or -errno.
int OpenNoted(int dir, const char* name, int flags) {
  OwnedFdsLock lock;
  int fd = FdInstalled(openat(dir, name, flags | O_CLOEXEC));
  return fd < 0 ? -errno : fd;
}

}  // namespace

int FdReadFileId(int dir, const char* name, std::string* out) {
  int fd = OpenNoted(dir, name, O_RDONLY);
  if (fd < 0) return fd;
  UniqueFd f(fd);
  return ReadFileIdFrom(f.get(), out);
}

int FdFileId(pid_t pid, int fd, std::string* out) {
  char path[64];
  if (pid <= 0) {
    snprintf(path, sizeof(path), "/proc/self/fdinfo");
  } else {
    snprintf(path, sizeof(path), "/proc/%d/fdinfo", static_cast<int>(pid));
  }
  int at = OpenNoted(AT_FDCWD, path, O_RDONLY | O_DIRECTORY);
  if (at < 0) return at;
  UniqueFd dir(at);
  char name[16];
  snprintf(name, sizeof(name), "%d", fd);
  return FdReadFileId(dir.get(), name, out);
}

namespace {

// A getdents64 entry (linux/dirent.h has no userspace definition).
struct Dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

// How a walk opens and closes the fdinfo files it reads: with numbers of
// this process's table, noted in the registry (ListInThisTable), or by raw
// system calls in a table of the walking thread's own (ListInOwnTable).
struct InfoFiles {
  int (*open)(int info, const char* name);  // an fd, or -errno
  void (*close)(int fd);
};

// The walk both FdList's ways share: the entries of /proc/<pid>/fd, open at
// `dir`, into `out`, each fd's number and link target and, with `info` (its
// fdinfo directory; -1: not wanted), its file id (left empty where it
// cannot be read). `skip_a` and `skip_b` are left out (the walk's own
// directories when it lists this table). 0 or -errno; -EMFILE when an
// fdinfo file found no number free (the caller reads again elsewhere).
int WalkFdDirectory(int dir, int info, const InfoFiles& files, int skip_a, int skip_b, std::vector<FdEntry>* out) {
  out->clear();
  alignas(Dirent64) char buf[8192];
  for (;;) {
    long n = syscall(SYS_getdents64, dir, buf, sizeof(buf));
    if (n == 0) return 0;
    if (n < 0) return -errno;
    for (long at = 0; at < n;) {
      const Dirent64* d = reinterpret_cast<const Dirent64*>(buf + at);
      at += d->d_reclen;
      char* end = nullptr;
      long fd = strtol(d->d_name, &end, 10);
      if (end == d->d_name || *end != '\0') continue;  // "." and ".."
      if (fd == skip_a || fd == skip_b) continue;
      char target[4096];
      ssize_t len = readlinkat(dir, d->d_name, target, sizeof(target) - 1);
      if (len < 0) continue;  // closed since (another thread)
      FdEntry e{static_cast<int>(fd), std::string(target, static_cast<size_t>(len)), std::string()};
      if (info >= 0) {
        int f = files.open(info, d->d_name);
        if (f == -EMFILE) return -EMFILE;
        if (f < 0 || ReadFileIdFrom(f, &e.file) != 0) e.file.clear();
        if (f >= 0) files.close(f);
      }
      out->push_back(std::move(e));
    }
  }
}

// An FdList walk on a thread of its own (ListInOwnTable).
struct OwnTableList {
  pid_t pid;
  bool files;
  std::vector<FdEntry>* out;
  int err = 0;
};

// FdList's walk of /proc/<pid>/fd (and fdinfo) for a table with no number
// free (EMFILE: a leak that took them all is what a leak check must still
// see), on this thread, which first makes its fd table its own and empty
// (CLOSE_RANGE_UNSHARE, as the leak checker's holds: fd_hold.cc): the two
// directories and each fdinfo file open at its own numbers, none of the
// process's, and close with the thread's table. Raw system calls: those
// numbers are of another table, nothing that keeps the process's (the
// registry, an interposer that records opens by number: fdtrack) is told
// of them.
void* ListInOwnTable(void* arg) {
  OwnTableList* job = static_cast<OwnTableList*>(arg);
  if (syscall(SYS_close_range, 0U, ~0U, CLOSE_RANGE_UNSHARE) != 0) {
    job->err = -errno;
    return nullptr;
  }
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd", static_cast<int>(job->pid));
  int dir = static_cast<int>(syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));  // this thread's own table
  int info = -1;
  if (dir >= 0 && job->files) {
    snprintf(path, sizeof(path), "/proc/%d/fdinfo", static_cast<int>(job->pid));
    info = static_cast<int>(syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));  // this thread's own table
  }
  if (dir < 0 || (job->files && info < 0)) {
    job->err = -errno;
  } else {
    static const InfoFiles raw = {
        [](int at, const char* name) {
          int f = static_cast<int>(syscall(SYS_openat, at, name, O_RDONLY | O_CLOEXEC));  // this thread's own table
          return f < 0 ? -errno : f;
        },
        [](int f) { syscall(SYS_close, f); },
    };
    job->err = WalkFdDirectory(dir, info, raw, -1, -1, job->out);
  }
  syscall(SYS_close_range, 0U, ~0U, 0U);
  return nullptr;
}

// Runs ListInOwnTable on a thread of its own (StartQuietThread) and waits
// for it. 0 or -errno.
int ListInTableOfItsOwn(pid_t pid, std::vector<FdEntry>* out, bool files) {
  OwnTableList job{pid <= 0 ? getpid() : pid, files, out};
  out->clear();
  pthread_t thread;
  int r = StartQuietThread(&thread, ListInOwnTable, &job);
  if (r != 0) return r;
  pthread_join(thread, nullptr);
  return job.err;
}

// FdList's walk with numbers of this process's table: -EMFILE when an open
// of it (a directory, an fdinfo file) found none free.
int ListInThisTable(pid_t pid, std::vector<FdEntry>* out, bool files) {
  char path[64];
  if (pid == getpid()) pid = 0;  // our own table: leave our directory fds out
  if (pid <= 0) {
    snprintf(path, sizeof(path), "/proc/self/");
  } else {
    snprintf(path, sizeof(path), "/proc/%d/", static_cast<int>(pid));
  }
  size_t base = strlen(path);
  UniqueFd info;
  if (files) {
    snprintf(path + base, sizeof(path) - base, "fdinfo");
    int at = OpenNoted(AT_FDCWD, path, O_RDONLY | O_DIRECTORY);
    if (at < 0) return at;
    info.reset(at);
  }
  snprintf(path + base, sizeof(path) - base, "fd");
  int at = OpenNoted(AT_FDCWD, path, O_RDONLY | O_DIRECTORY);
  if (at < 0) return at;
  UniqueFd dir(at);
  static const InfoFiles noted = {
      [](int at, const char* name) { return OpenNoted(at, name, O_RDONLY); },
      [](int f) { UniqueFd closing(f); },
  };
  // Our own directory fds show up in /proc/self/fd; they are not part of
  // the table we were asked about.
  return WalkFdDirectory(dir.get(), info.get(), noted, pid <= 0 ? dir.get() : -1, pid <= 0 ? info.get() : -1, out);
}

}  // namespace

int FdList(pid_t pid, std::vector<FdEntry>* out, bool files) {
  int r = ListInThisTable(pid, out, files);
  // No number free: read again where the walk's opens take none of them.
  return r == -EMFILE ? ListInTableOfItsOwn(pid, out, files) : r;
}

int FdPosixLock(int fd, int type) {
  struct flock fl = {};
  fl.l_type = static_cast<short>(type);
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_SETLK, &fl) != 0) return -errno;
  return 0;
}

int FdConflictingLock(int fd) {
  struct flock fl = {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return -errno;
  return fl.l_type;
}

int FdGetLimit(uint64_t* soft, uint64_t* hard) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -errno;
  *soft = static_cast<uint64_t>(rl.rlim_cur);
  *hard = static_cast<uint64_t>(rl.rlim_max);
  return 0;
}

int FdSetLimit(uint64_t soft, uint64_t hard) {
  struct rlimit rl;
  rl.rlim_cur = static_cast<rlim_t>(soft);
  rl.rlim_max = static_cast<rlim_t>(hard);
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return -errno;
  ComputeFloor();
  return 0;
}

// Each makes its fds and notes their install (FdInstalled) as one step,
// under an OwnedFdsLock.
int FdPipe(int out[2]) {
  OwnedFdsLock lock;
  if (pipe2(out, O_CLOEXEC) != 0) return -errno;  // installed: FdInstalledAll below
  FdInstalledAll(out, 2);
  return 0;
}

int FdMemfd(const char* name) {
  OwnedFdsLock lock;
  int fd = memfd_create(name, MFD_CLOEXEC);  // installed: FdInstalled below
  return FdInstalled(fd < 0 ? -errno : fd);
}

int FdEventfd() {
  OwnedFdsLock lock;
  int fd = eventfd(0, EFD_CLOEXEC);  // installed: FdInstalled below
  return FdInstalled(fd < 0 ? -errno : fd);
}

int PidfdOpen(pid_t pid) {
  OwnedFdsLock lock;
  long r = syscall(SYS_pidfd_open, pid, 0);  // installed: FdInstalled below
  return FdInstalled(r < 0 ? -errno : static_cast<int>(r));
}

int PidfdGetfd(int pidfd, int target_fd) {
  long r = syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);  // installed: PidfdGetfdAllHigh's MarkNew, under its lock
  return r < 0 ? -errno : static_cast<int>(r);
}

int FdOwnHigh(int fd) {
  if (fd < 0) return fd;
  OwnedFdsLock lock;  // held by the caller already; taken again (recursive) to keep the promise here
  if (fd >= FdFloor()) {
    MarkNew(&fd, 1);
    return fd;
  }
  UniqueFd low(fd);  // released once its copy above the floor exists (or not)
  return FdDupHigh(low.get());
}

int PidfdGetfdHigh(int pidfd, int target_fd) {
  int out;
  int r = PidfdGetfdAllHigh(pidfd, &target_fd, 1, &out);
  return r < 0 ? r : out;
}

namespace {

// close_range(2) of [first, last]: false when it failed, and from then on
// without trying it again once the kernel said it has none (ENOSYS: before
// Linux 5.9), so that a fallback to close(2) costs no failing call a run.
std::atomic<bool> g_no_close_range{false};
bool CloseRange(unsigned first, unsigned last) {
  if (g_no_close_range.load(std::memory_order_relaxed)) return false;
  if (syscall(SYS_close_range, first, last, 0) == 0) return true;
  if (errno == ENOSYS) g_no_close_range.store(true, std::memory_order_relaxed);
  return false;
}

// Closes the fds of `fds` (each open and ours alone: nothing else can hold
// an open number), a run of consecutive numbers per close_range(2) call.
// Sorts `fds`. Without close_range each is closed on its own.
void CloseRuns(std::vector<int>* fds) {
  std::sort(fds->begin(), fds->end());
  size_t i = 0;
  while (i < fds->size()) {
    size_t j = i + 1;
    while (j < fds->size() && (*fds)[j] == (*fds)[j - 1] + 1) j++;
    unsigned first = static_cast<unsigned>((*fds)[i]), last = static_cast<unsigned>((*fds)[j - 1]);
    if (j - i == 1 || !CloseRange(first, last)) {
      for (size_t k = i; k < j; k++) close((*fds)[k]);
    }
    i = j;
  }
}

}  // namespace

int PidfdGetfdAllHigh(int pidfd, const int* targets, size_t n, int* out, const FdIdentity* expected, size_t* swapped) {
  // A pull that lands on a number the list names must leave it at once:
  // pulling from this very process, that number was a closed target, and
  // a later pull of it would take our copy of another target instead of
  // failing (from another process, the same number is a coincidence, and
  // moving early costs nothing more).
  std::vector<int> named(targets, targets + n);
  std::sort(named.begin(), named.end());
  std::vector<int> pulled(n, -1);  // each pull where it landed, or its copy above the floor
  std::vector<bool> high(n, false);  // pulled[i] is a registered copy above the floor
  std::vector<int> low;  // the numbers pulls landed on below the floor, still open
  std::vector<size_t> low_at;
  std::vector<std::pair<int, uint64_t>> marks;  // low[k] and its mark as being closed (MarkNumberClosingLocked)
  int r = 0;
  {
    OwnedFdsLock lock;  // made and registered as one step
    int floor = FdFloor();
    for (size_t i = 0; i < n && r >= 0; i++) {
      r = PidfdGetfd(pidfd, targets[i]);
      if (r < 0) break;
      pulled[i] = r;
      if (r >= floor) continue;  // stays where it is (registered below)
      if (std::binary_search(named.begin(), named.end(), r)) {
        int moved = FdDupHigh(r);
        // Under the lock, before the next pull: the file's flush runs here
        // and waits as long as its filesystem does (a FUSE server that does
        // not answer holds every thread that takes the lock meanwhile).
        // Only a pull landing on a number the list names comes here: from
        // another process, a list naming this process's lowest free number
        // below the floor (a pidfd client names its pins, above its floor).
        close(r);
        if (moved < 0) {
          pulled[i] = -1;
          r = moved;
          break;
        }
        pulled[i] = moved;
        high[i] = true;
        continue;
      }
      low.push_back(r);
      low_at.push_back(i);
    }
    if (r >= 0) {
      // Below the floor, a pull sits on a number the caller may have
      // closed and still name: those move above it (as FdOwnHigh does),
      // all in one FdDupAllHigh; at or above it, a pull stays where it is.
      std::vector<int> moved(low.size());
      r = low.empty() ? 0 : FdDupAllHigh(low.data(), low.size(), 0, moved.data());
      if (r >= 0) {
        for (size_t k = 0; k < low.size(); k++) {
          pulled[low_at[k]] = moved[k];
          high[low_at[k]] = true;
          marks.emplace_back(low[k], MarkNumberClosingLocked(TheOwnedFds(), low[k], moved[k]));
        }
        for (size_t i = 0; i < n; i++) {
          if (!high[i]) MarkNew(&pulled[i], 1);
          out[i] = pulled[i];
        }
      }
    }
  }
  if (r >= 0) {
    // The low numbers, marked as being closed, are closed with the lock let
    // go: a close calls the file's flush even when it is not the last
    // reference (the moved copies hold them), and a FUSE file's waits for
    // its server. This thread waits there; the others go on.
    std::vector<int> closing = low;
    CloseRuns(&closing);
    EndNumberCloses(marks);
    if (expected == nullptr) return 0;
    // Each pull is the file the client pinned, or none is kept: another
    // file is the client program's, at a number it closed and reopened
    // before this pull. The copies are ours (registered, above the floor),
    // and closing this process's copy leaves the client's file open there.
    for (size_t i = 0; i < n; i++) {
      if (FdHoldsFile(out[i], expected[i])) continue;
      if (swapped != nullptr) *swapped = i;
      FdCloseAll(out, n);
      return -EBADF;
    }
    return 0;
  }
  // Failed: nothing is kept. Closed outside the lock: a pull can hold its
  // file's last reference (the client may close the original meanwhile),
  // and such a close can block.
  std::vector<int> plain;
  for (size_t i = 0; i < n; i++) {
    if (pulled[i] < 0) continue;
    if (high[i]) FdClose(pulled[i]);
    else plain.push_back(pulled[i]);
  }
  CloseRuns(&plain);
  return r;
}

size_t FdCloseAll(const int* fds, size_t n) {
  std::vector<uint64_t> registrations(n);
  size_t closed = 0;
  size_t i = 0;
  while (i < n) {
    // A run of consecutive numbers, every one registered as ours, is open
    // (a registration ends at its fd's close), so one close_range(2)
    // closes exactly those, and the count stays exact. A batch's pins
    // (FdDupAllHigh, from above the batch) usually form one such run. As in
    // FdClose, each registration is read before its close (and after the
    // closes before it: a number listed twice is not ours the second time)
    // and dropped after it.
    size_t j = i;
    while (j < n && fds[j] >= 0 && (j == i || fds[j] == fds[j - 1] + 1)) {
      registrations[j] = BeginClose(fds[j]);
      if (registrations[j] == 0) break;
      j++;
    }
    // close_range(2) says nothing of a number in the run that someone else
    // closed: while a leak check watches for those (FdWatchClosedByOthers),
    // each is closed on its own.
    bool watched = TheOwnedFds().watchers.load(std::memory_order_relaxed) != 0;
    if (j - i >= 2 && !watched && CloseRange(static_cast<unsigned>(fds[i]), static_cast<unsigned>(fds[j - 1]))) {
      closed += j - i;
    } else {
      j = i + 1;
      if (fds[i] >= 0) {
        registrations[i] = BeginClose(fds[i]);
        if (close(fds[i]) == 0 || errno == EINTR) {
          closed++;
        } else if (errno == EBADF) {
          FdClosedByOther(fds[i], registrations[i]);
        }
      }
    }
    for (size_t k = i; k < j; k++) FdDisownRegistration(fds[k], registrations[k]);
    i = j;
  }
  return closed;
}

}  // namespace fdbridge
