// Plain POSIX file-descriptor primitives. No Node-API, no libuv: every function
// returns 0 (or a non-negative result) on success and -errno on failure, so the
// binding layer can turn failures into typed errors without consulting errno.
#ifndef FDBRIDGE_FD_OPS_H_
#define FDBRIDGE_FD_OPS_H_

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include <functional>
#include <optional>
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
  // With FdList's `files`: "mnt_id:ino" from /proc/<pid>/fdinfo/<fd>
  // (FdReadFileId in fd_hold.h), empty when unread (closed in between, a
  // kernel before 5.14).
  std::string file;
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

// F_DUPFD_CLOEXEC at or above FdFloor(), registered as ours (see
// OwnedFdsLock). No number free there is EMFILE,
// even when lower numbers are free: a lower one could be a number the
// caller still names.
int FdDupHigh(int fd);

// Duplicates fds[0..n) into out[0..n), all or none (on failure the
// duplicates made are closed), each at or above max(FdFloor(), min_fd), and
// registers the duplicates as ours. The fds given are not checked against
// the registry (a pin of ours may be queued again): callers that take
// numbers from a caller check them first (FdRefuseOwned).
// With min_fd above the highest fd of a list, no duplicate can take the
// number of a closed fd later in the list (and make it "succeed" on the
// wrong file). When there is no room at min_fd (it reaches the limit),
// every fd is checked to be open first and the duplicates go from the floor.
int FdDupAllHigh(const int* fds, size_t n, int min_fd, int* out);

// FdDupAllHigh for copies given to a command in this process (direct,
// worker), which `owner`'s ledger closes unless the command adopts them
// (FdCloseGivenInBackground with the same owner). The caller's fds are
// checked in the same hold of the registry's lock as the duplication: one
// fdbridge holds for itself is refused as closed (EBADF, FdRefuseOwned).
// Call it holding no OwnedFdsLock (the lock is recursive: one held would be
// held across the files' reads below). Each registration keeps
// that owner and the copy's file as it is made (device and inode, read with
// statx(2) AT_STATX_DONT_SYNC: the kernel's own, no filesystem asked, read
// outside the registry's lock), so that a number the program closed behind
// fdbridge's back, and another file took, is told apart at that close. A
// copy closed by someone else before it is marked, whose number a new fd
// of ours took, is not marked (nor that new fd).
int FdDupAllGiven(const int* fds, size_t n, int min_fd, uint64_t owner, int* out);
// FdDupAllGiven's mark for fds that are registered already (received from
// a peer on a socket whose fds are ours, then given to a command: a helper
// daemon's connection, FrameChannel): each registered one is marked given to
// `owner` with its file as it is now (one statx(2) AT_STATX_DONT_SYNC each,
// read outside the registry's lock; a registration the number no longer has
// after the read is not marked). Returns how many were registered and marked.
size_t FdMarkGiven(const int* fds, size_t n, uint64_t owner);
// Duplicates a caller's fds (dupHigh, dupAll): a number fdbridge holds for
// itself is refused as closed (EBADF, FdRefuseOwned), checked in the same
// hold of the registry's lock as the duplication. Owner 0: FdDupAllHigh;
// else FdDupAllGiven (which checks them itself: no lock is held across its
// reads of the copies' files).
int FdDupCallersFds(const int* fds, size_t n, int min_fd, uint64_t owner, int* out);
// The files the copies fds[0..n) were given to `owner` with (FdDupAllGiven:
// each read as it was made), into files[0..n), read under one hold of the
// registry's lock: 0, or -EBADF when one is no copy given to `owner` any
// more (closed behind fdbridge's back and its number taken by a new fd of
// ours) or its file could not be read when made. Nothing is read of the
// files at the numbers now.
int FdGivenFiles(const int* fds, size_t n, uint64_t owner, FdIdentity* files);
// Whether `fd`'s registration is a copy given to `owner` (FdDupAllGiven,
// FdMarkGiven): false once someone else closed it and a new fd of ours
// took the number, or none did.
bool FdIsGiven(int fd, uint64_t owner);

// The min_fd above `highest` for FdDupAllHigh: highest + 1, saturated at
// INT_MAX, a number no fd can have (the kernel's nr_open stays below it),
// so a list naming it gets EBADF from the check, not a signed overflow.
inline int FdAbove(int highest) { return highest < INT_MAX ? highest + 1 : INT_MAX; }

// The fds fdbridge holds for itself, process-wide (worker threads share the
// fd table, so one registry serves every thread): pins, a queued send's
// copies, duplicates given to a command in this process and not yet
// adopted, fds a command was given over a socket or pulled with
// pidfd_getfd and has not adopted, and the library's own watchers.
//
// The floor keeps these above the caller's numbers only while the caller's
// fds stay below it. Past it (a low RLIMIT_NOFILE, or thousands of fds
// open), one of ours can take a number the caller has closed and still
// names; dup of that number would then "succeed" on our copy of someone
// else's file. So every number that comes in from a caller (a duplication,
// a socket send's fds) is checked against this registry, and one of ours is
// refused with EBADF, exactly as if it were closed, which for the caller it
// is.
//
// Registered where the library makes the fd (FdDupHigh, FdDupAllHigh,
// PidfdGetfdHigh and PidfdGetfdAllHigh, FdOwnHigh for its own sockets and pidfds, FdMarkOwned for
// fds that arrive by recvmsg); unregistered
// where ownership leaves the library: FdClose (every close goes through it)
// or FdDisown (a command adopted it).
//
// OwnedFdsLock is held across checking a caller's numbers and using them,
// and across making our fds and registering them, so that another thread's
// fd cannot take a number between the check and the use. It is recursive:
// a send that gets queued pins its fds (FdDupAllHigh) under the same lock.
// It is never held across close(2) of a file that may be a caller's or a
// client's, which can block (see FdCloseInBackground): FdClose unregisters
// after the close, and only the registration it saw before (a generation),
// never one a thread made for a new fd that took the freed number
// meanwhile. Not even a close that is not the file's last reference: every
// close of a number calls the file's flush, and a FUSE file's waits for its
// server (FdCloseCallers and the closer mark such a number as being closed
// and close it with the lock let go). Two places still close a number
// under it, each documented there: a pidfd pull that lands on a number its
// list names (PidfdGetfdAllHigh), and the placeholder put over a new fd at
// a stream's number someone else closed (fd_ops.cc, PutPlaceholderLocked).
class OwnedFdsLock {
 public:
  OwnedFdsLock();
  ~OwnedFdsLock();
  OwnedFdsLock(const OwnedFdsLock&) = delete;
  OwnedFdsLock& operator=(const OwnedFdsLock&) = delete;
};

// -EBADF if any of fds[0..n) is one fdbridge holds for itself, else 0.
// Hold an OwnedFdsLock from this check until the numbers have been used.
int FdRefuseOwned(const int* fds, size_t n);
// Records fds[0..n) as held by fdbridge (idempotent).
void FdMarkOwned(const int* fds, size_t n);
// FdMarkOwned for fds that code which keeps them at their numbers made at
// the lowest free numbers, once (an event loop's: libuv opened them and
// closes them by number, so they cannot be moved): a registration still at
// such a number, of an fd fdbridge was not closing, was closed by someone
// else and is taken over, as FdMarkNew ends it (FdStillHeld false for it,
// FdTakeOvers counts it: a relay's stream that polled the number lets it
// go instead of reading or writing the new fd).
void FdMarkOwnedInPlace(const int* fds, size_t n);
// FdMarkOwned for fds the kernel has just made (recvmsg's): their numbers
// were free a moment ago. A registration still at such a number, of an fd
// fdbridge was not closing itself, was closed by someone else: it ends (as
// with FdClosedByOther, noted while a check watches), and its owner's later
// close must leave the number alone (FdStillHeld). FdDupHigh, FdDupAllHigh,
// FdOwnHigh and the pidfd_getfd pulls register this way.
// One whose registration is a libuv stream's that has not begun its close
// (FdRuntimeCloses, FdRuntimeClosing) would be closed by that stream's close
// (libuv closes by number): it is moved to another number, written back to
// fds[i], and the stream's number left holding a file of fdbridge's own for
// that close to take (a socket whose peer is closed: the stream, which may
// still poll, read and write the number until its close, finds end of file
// and EPIPE there; at the fd limit, when none can be made, the new fd
// stays, at risk).
void FdMarkNew(int* fds, size_t n);
// Each fd number's install generation: every fd fdbridge's native code puts
// in the process's table (a dup, a socket, an accepted connection, a
// received fd, a pipe, a pidfd, a pulled fd...) gives its number a new
// generation, process-wide (every thread's, every environment's), never
// given before to any number. FdMarkNew does it for the fds it registers;
// FdInstalled and FdInstalledAll for those that stay unregistered. The
// caller holds an OwnedFdsLock from before the call that makes the fd until
// it is noted here, so that no look at the generations (under the same
// lock) sees the new fd with its number's old generation. A command's hold
// of an fd (an adoption: FdInstallGenerations; a receipt: FdClaimReceipts) records it, and
// closeClientFds closes the number only while it is still that
// (FdCloseClientFdsInBackground): another fd fdbridge put there since, of
// the same file or not, is not the command's. What no native path sees (a
// file the program opens there itself, libuv's fds) leaves it as it was.
// test/structure/native-installs checks that every call in native/ that
// makes an fd in the process's table is noted here (temporary ones too).
// `fd` as it is (negative: a failed call's -errno, passed through).
int FdInstalled(int fd);
void FdInstalledAll(const int* fds, size_t n);
// FdInstalled for an fd a receive on a socket with a receipt tag
// (FdNewReceiptTag: a socket a command made as it ran) installed: the
// number's install is that tag's receipt until it is claimed
// (FdClaimReceipts) or another install comes there. Under an OwnedFdsLock
// taken before the receive, as FdInstalled.
void FdInstalledReceipt(int fd, uint64_t receipt_tag);
// A receipt tag never given before (never 0): one for each command's
// record of its client's fds (src/client-fds.ts).
uint64_t FdNewReceiptTag();
// A command's hold of fds a socket of its own received: out[i] is fds[i]'s
// install generation when its current install is a receipt with
// `receipt_tag` not claimed yet, which it is from now on; 0 for any other
// number (one the command chose, another's receipt or copy, an fd made
// otherwise, a receipt claimed already), which is not the command's. In one
// hold of the registry's lock: no one number is claimed twice.
void FdClaimReceipts(const int* fds, size_t n, uint64_t receipt_tag, uint64_t* out);
// The install generation of each of fds[0..n) into out[0..n) (0: none
// since the process started), in one hold of the registry's lock.
void FdInstallGenerations(const int* fds, size_t n, uint64_t* out);
// For an owner that holds `fd` under `registration` (FdRegistration when it
// took it), before it closes or uses that number: false when the fd is no
// longer the one it registered, closed by someone else meanwhile. Either a
// new fd of ours took the number (FdMarkNew), or, with `identity` (the
// file's, read when it was registered), the number holds another file or
// none: a file the program opened there, which is not fdbridge's to close.
// The registration ends then (FdClosedByOther). True for registration 0 (an
// fd that was not ours: nothing is known of it). Costs an fstat(2) with an
// identity, a lock without: not for a round trip's path.
bool FdStillHeld(int fd, uint64_t registration, const FdIdentity* identity);
// FdStillHeld for an owner that has just read the file at `fd` itself (one
// fstat(2) on that path, not two): `same_file` whether it is the one it
// registered.
bool FdStillHeldLooked(int fd, uint64_t registration, bool same_file);
// FdClose, for such an owner, only while FdStillHeld; else -EBADF and the
// number is left alone.
int FdCloseHeld(int fd, uint64_t registration, const FdIdentity* identity);
// How many registrations a new fd of ours has taken over (FdMarkNew) in
// this process so far: read without a lock, for an owner that looks again
// (FdStillHeld) only when it has changed.
uint64_t FdTakeOvers();
// Runs `wake(arg)` at each take-over from now on, on the thread whose new
// fd took the number and under the registry's lock: it must only wake its
// owner (uv_async_send), who then looks (FdStillHeld) on its own thread.
void FdWakeOnTakeOvers(void (*wake)(void*), void* arg);
// Stops FdWakeOnTakeOvers' wakes of `arg`: none runs once this returns.
void FdStopWakeOnTakeOvers(void* arg);
// The fd stays open but is no longer fdbridge's (a command adopted it).
void FdDisown(int fd);
// FdDisown of a copy `owner`'s ledger was given (FdDupAllGiven), only while
// `fd` still has that registration and holds the file it was given with
// (one statx(2) AT_STATX_DONT_SYNC, outside the registry's lock): false
// when the copy was closed behind fdbridge's back, and its number is
// another fd of ours now (another ledger's copy, a socket: nothing done),
// free, or another file (the registration ends as closed by someone else,
// FdClosedByOther). The same file at the number (a copy of it the program
// made there) is not told apart.
// With `file`: once disowned, *file is its file as it was marked given (the
// copy's as made or received), or nullopt when that could not be read.
bool FdDisownGiven(int fd, uint64_t owner, std::optional<FdIdentity>* file = nullptr);
// FdDisown of an fd a holder kept under `registration` (FdRegistration as
// it was kept; 0: it was none of ours), only while `fd` still has that
// registration and is open: false when it was closed behind fdbridge's
// back, and its number is another fd of ours now (nothing done) or free
// (the registration ends as closed by someone else, FdClosedByOther).
// Another file at the number, nobody's fd of ours, is not told apart.
bool FdDisownHeld(int fd, uint64_t registration);
// The registration `fd` has now (a generation, never reused), or 0 when it
// is not one of ours.
uint64_t FdRegistration(int fd);
// FdRegistration of each of fds[0..n), into out[0..n), in one hold of the
// registry's lock.
void FdRegistrations(const int* fds, size_t n, uint64_t* out);
// Unregisters `fd` if it still has that registration: for an fd of ours
// something else closed (libuv, for a stream on it), unregistered once the
// close is done, as FdClose does, and never taking with it the registration
// of a new fd of ours that took the freed number meanwhile. 0: nothing.
void FdDisownRegistration(int fd, uint64_t registration);
// `fd`, registered as ours with `registration`, was found closed (EBADF)
// or holding another file by fdbridge, where it was about to close it: someone
// else closed it. Ends that registration (as FdDisownRegistration) and, while
// a leak check watches (FdWatchClosedByOthers), notes it first: the check
// blames the code under test for that close, never sets it aside as ours.
void FdClosedByOther(int fd, uint64_t registration);
// A leak check starts (true) or stops (false) watching for registrations
// that end with FdClosedByOther; the notes are dropped when none watches.
// While one does, FdCloseAll closes each registered fd on its own (a
// close_range(2) over a run says nothing of a number already closed).
void FdWatchClosedByOthers(bool on);
// Whether `registration` ended with FdClosedByOther while a check watched.
bool FdWasClosedByOther(uint64_t registration);
// How many fds fdbridge holds for itself in this process now.
size_t FdOwnedCount();
// Whether `fd` is one fdbridge holds for itself.
bool FdIsOwned(int fd);

// A worker thread's event loop opens its fds (an epoll fd, an io_uring fd on
// Node 22 and later, the signal pipe, the async eventfd) as the thread
// starts, before any of its code runs, at the lowest free numbers: where a
// number the caller has closed, and may still name, can be. The worker
// transport's thread registers them (ownLoopFds) once its JavaScript runs,
// and no sooner. A loop start, from just before the client makes the
// Worker until that registration (or until the thread is gone), refuses a
// caller's number (EBADF, FdRefuseOwned) when the fd now there could be one
// of the loop's: of a kind a loop opens (a pipe, an epoll, eventfd, io_uring
// or inotify fd, /dev/null) and, when the start began, not open or another
// file (its /proc/self/fd target then). Misdelivery is what it rules out;
// what it cannot tell apart, and so does:
// - such an fd that the caller itself opened during the start, at a number
//   free before: refused (EBADF) although it is the caller's, until the
//   start ends;
// - an epoll, eventfd or io_uring fd of the caller's, closed during the
//   start, whose number the loop took for an fd of the same kind (their
//   /proc targets are alike): passed, as the caller's file.
// The loop's fds stay at the numbers they open at, and a libuv stream of
// fdbridge's (FdRuntimeCloses) closes its number itself, by number: so a
// stream's number that someone else closed gets a placeholder of
// fdbridge's first (a socket whose peer is closed; the stream's close takes
// it), never left free for the loop's epoll fd, which the stream's close
// would close under the running loop (libuv then aborts). A number closed
// behind fdbridge's back during the start, and taken by one of the loop's
// fds, is found as the thread registers them (ownLoopFds: the thread ends,
// and the worker transport starts another).
uint64_t FdLoopStartBegin();
// Ends the start (idempotent). Hold an OwnedFdsLock from registering the
// loop's fds until this returns, so that no check sees neither.
void FdLoopStartEnd(uint64_t start);
// Loop starts not ended.
size_t FdLoopStartsOpen();

// fds[0..n), registered, leave the registry when the calling thread exits,
// each only with the registration it has now (a new fd of ours that took the
// number meanwhile stays). For a worker thread's event loop fds: libuv closes
// them after every environment cleanup (uv_loop_close), and the thread exits
// after that; registered until then, a number is never handed out while the
// loop still holds it. Between the close and the exit, an fd another thread
// opens at such a number is refused (EBADF) by fdbridge: refused, never
// misdelivered.
void FdUnregisterAtThreadExit(const int* fds, size_t n);
// Those fds, before libuv closes them (the environment's teardown on that
// thread): each still registered that is closed, or holds another file than
// when it was registered (its device and inode), was closed by someone else
// (FdClosedByOther); libuv's own close of it then fails unseen.
void FdCheckThreadExitFds();

// Who closes a registered fd when the JavaScript that held it stops for
// good. A worker thread that is terminated (or exits with connections
// open) runs none of its closes: the duplicates it gave a command in this
// process and were not adopted, its pins, the fds that arrived for it, are
// then closed by its environment's teardown (FdReleaseHolder), since worker
// threads share the process's fd table and nothing else would close them.
//
// Every fd registered on a thread is held for that thread's environment
// (FdSetThreadHolder; 0, nobody's, on threads of our own), unless something
// that closes it by itself takes it: a native object (a socket, a watch, a
// relay pump, the background closer: FdHeldByNative), whose close comes
// from its own environment's teardown, or a libuv stream (FdRuntimeCloses),
// which Node closes before any environment cleanup hook runs.
//
// A new holder (one per environment, never reused).
uint64_t FdNewHolder();
// Fds registered on this thread from now on are held for `holder`.
void FdSetThreadHolder(uint64_t holder);
// Those of fds[0..n) that are registered are held by a native object now.
void FdHeldByNative(const int* fds, size_t n);
// `fd` is a libuv stream's to close: the environment's teardown, which comes
// after Node has closed every handle, only unregisters it. Returns its
// registration (0 if not ours).
uint64_t FdRuntimeCloses(int fd);
// Whether `fd` is the number of such a stream whose close has not begun
// (FdRuntimeClosing): the stream's close, by number, will close whatever fd
// is there then.
bool FdAwaitsRuntimeClose(int fd);
// That stream begins its close (libuv closes the fd now): a new fd of ours
// at the number from here on is not at risk from it (FdMarkNew). Only while
// `fd` still has `registration`.
void FdRuntimeClosing(int fd, uint64_t registration);
// Ends `holder`: its fds that the runtime closes leave the registry; the
// others, held by nobody from here on and still registered (so that no
// caller's number is mistaken for them until they are closed), are appended
// to *to_close for the caller to close (FdClose, FdCloseInBackground).
void FdReleaseHolder(uint64_t holder, std::vector<int>* to_close);

// Takes `fd`, made by fdbridge for itself a moment ago (a socket, a pidfd),
// and gives it back numbered at or above FdFloor() and registered: the fd
// itself when it is there already (the caller's fds reach past the floor),
// else a copy made there, the low number closed. On failure (-errno: EMFILE
// when no number is free there) the fd is closed; a negative `fd` (a failed
// call's -errno) is returned as it is.
//
// socket(2), accept4(2), socketpair(2) and pidfd_open(2) take the lowest
// free number and have no minimum, so the fd exists at a number the caller
// may have closed and still name until it is moved. The caller holds an
// OwnedFdsLock from before making it until this returns: no thread can name
// that number through fdbridge in between (every such path checks the
// registry under the lock). The close of the low number is not the file's
// last (the copy holds it), and the files these calls make (sockets,
// pidfds, eventfds, procfs files) have no flush to wait on, so it cannot
// block under the lock.
int FdOwnHigh(int fd);

// close(2). Linux always releases the descriptor, even when close returns
// EINTR (see close(2), "Dealing with error returns"), so EINTR is success here.
// An fd of ours is marked as being closed by fdbridge before the close (so
// that a new fd of ours taking the freed number meanwhile is not taken for a
// close by someone else, FdMarkNew) and unregistered once closed.
int FdClose(int fd);

// The caller's close of its own fds (closeFd, closeFds, OwnedFd's close):
// in one hold of the registry's lock, none of fds[0..n) may be one
// fdbridge holds for itself (FdRefuseOwned: registered, or possibly a
// starting loop's): -EBADF, *refused the index of the first, nothing
// closed. Then, in the same hold, each open one gets a copy above the floor
// (F_DUPFD_CLOEXEC, registered as ours) and its number is marked as being
// closed; once the lock is let go each number is closed (not the file's
// last reference, the copy holds it, but a close calls the file's flush,
// which may wait: a FUSE server's), its mark ends, and the copies are
// closed (FdClose: the last reference's). Only a close can change the file
// at a number, and fdbridge's closes of a marked number holding that very
// file (kcmp KCMP_FILE against the copy; without kcmp, the install
// generation and file) take it as being closed: no fd fdbridge's code on
// another thread puts at one of the numbers can be closed in its place
// between the look and the close. A number not open (a negative one
// included), named again after its close, or being closed by another
// such close, is passed over (EBADF), and so is one that holds, by the
// time the look reaches it, the copy above the floor of an earlier entry
// of the list (the number was free: the copy took it). With no
// number free above the floor (EMFILE) the number is marked all the same,
// without a copy (its install generation and file), and closed once the
// lock is let go: a second close of it meanwhile is passed over as well,
// never closes an fd of fdbridge's that took the freed number (the only
// one free at or above the floor then). *closed counts the closes; *first_error
// is the first one's -errno (EBADF for a number not open), 0 for none.
int FdCloseCallers(const int* fds, size_t n, size_t* closed, size_t* refused, int* first_error);

// The background closer: a pool of threads that close fds handed to them.
// close(2) can block for as long as the file's last reference takes to go:
// a TCP socket with SO_LINGER and unsent data waits up to its linger time
// (socket(7); the kernel takes any l_linger, an hour or more), a file on a
// hung NFS server longer. A process that closes fds other processes gave it
// (a helper daemon) must not run that on its event loop, and one peer's
// close that blocks must hold back nothing but what waits for that fd.
//
// Closes are handed over in batches; each batch has its own ticket and is
// done once every fd in it is closed, in whatever order the batches finish.
// Each batch belongs to an `owner` (a helper daemon passes the peer's uid
// plus one; the library's own holders an owner above kMaxPeerOwner; 0 for
// anyone else). The pool grows by one thread whenever work
// is waiting and no thread is free (each thread may be stuck in a close), up
// to kMaxCloserThreads, and threads left idle for a while exit again (one
// stays). One owner's closes run on at most kCloserThreadsPerOwner threads
// at once; its other closes wait in its own queue, and the queues of the
// owners take turns. So an owner whose closes block (a hostile peer's
// lingering sockets) holds back only its own closes and the replies that
// wait for them.
//
// kMaxCloserThreads / kCloserThreadsPerOwner owners, each with that many
// closes blocked at once, fill the pool's shared threads: then an owner
// with no close running still gets a thread, one of the reserve's, so that
// its closes (fast ones: an honest peer's) go on; an owner with a close
// running waits, in its turn, until a shared thread comes free (at most
// the longest linger time those peers set) or its own close ends. A thread
// is taken past the shared ones only by an owner with none running, so
// the threads in a close are never more than kMaxCloserThreads plus the
// owners with a close running: with a reserve of as many threads as there
// can be owners (a helper daemon's: one per uid it serves, and 0 for
// everyone else; FdReserveCloserThreads), an owner with no close running
// always gets one, however many of the others block theirs. Only when a
// thread cannot be made (RLIMIT_NPROC, TasksMax), or with more owners than
// the reserve, does every close wait, and every reply waiting for a close
// with it; the fds a peer gave still count in FdBackgroundClosesOfPeerFds
// meanwhile (a helper daemon's maxFdsTotal refuses new fds then, and
// nothing is lost or leaked). The caps bound threads: each counts as a task
// against the daemon's RLIMIT_NPROC and a service's TasksMax (systemd's
// default is a few thousand), and holds a kernel stack plus
// kCloserThreadStack of address space; 128 blocked threads cost about
// 40 MiB at most.
constexpr size_t kMaxCloserThreads = 64;
constexpr size_t kCloserThreadsPerOwner = 8;
// Owners above kMaxPeerOwner (a uid plus one) are this process's own
// holders, not peers: the library's (fd.ts: HeldCopies, one per holder of
// copies, FdNewCloseOwner) and the teardown of ended environments
// (kTeardownOwner). What they close are copies of files this process's own
// code handed to fdbridge (a failed request's pins, a queued send's copies,
// the duplicates a command did not adopt), and only that code's sockets
// can make those closes block. The per-owner cap is there so that one
// peer's blocked closes leave the shared threads to the others; on such an
// owner it would only keep its closes past the cap waiting behind the
// blocked ones, each still open (in the fd table, counted against
// RLIMIT_NOFILE, registered as fdbridge's) for as long as they linger, one
// share after another. So such an owner's closes run on any shared thread
// (CloserThreadsFor); past the shared ones it is treated as everyone is (a
// reserve thread only while it has no close running).
constexpr uint64_t kMaxPeerOwner = uint64_t{1} << 32;
constexpr uint64_t kTeardownOwner = kMaxPeerOwner + 1;
// A new owner of this process's own (above kTeardownOwner), never given
// before in this process, whichever thread asks: one per holder of copies
// (fd.ts: HeldCopies), so that one holder's closes that block hold back
// only its own, whatever thread or worker made it.
uint64_t FdNewCloseOwner();
// How many of `owner`'s closes may run at once.
constexpr size_t CloserThreadsFor(uint64_t owner) {
  return owner > kMaxPeerOwner ? kMaxCloserThreads : kCloserThreadsPerOwner;
}
// The reserve when nobody asked for more (FdReserveCloserThreads), and the
// most it is ever made.
constexpr size_t kCloserReserveThreads = 64;
constexpr size_t kMaxCloserReserveThreads = 1024;
// A close needs little stack: the threads get this much, not the default 8 MiB.
constexpr size_t kCloserThreadStack = 256 * 1024;
// The closer threads' name (at most 15 characters), set by each thread as it
// starts: a thread otherwise inherits its creator's (a lane thread's, say).
constexpr const char* kCloserThreadName = "fdbridge-close";

// Hands fds[0..n) to the closer as one batch of `owner`'s and returns its
// ticket (0, already done, for an empty batch). The fds are the closer's
// from here on, whatever happens. One the program closes behind their back
// is not closed again: its file (device and inode number, read as it is
// handed over without asking the filesystem, AT_STATX_DONT_SYNC; for a copy
// given to a command, the one recorded as it was made, FdDupAllGiven) is
// checked on the closer's thread just before the close, and one of ours by its
// registration too (FdStillHeld with the registration it had when handed
// over: a new fd of ours took the number). Another file at the number then
// (or none) is left alone; one of ours ends as closed by someone else.
// `held_for_peer`: they are fds a peer gave us (counted in
// FdBackgroundClosesOfPeerFds, against a helper's fd totals until closed);
// false for our own socket to that peer, counted with the connections.
uint64_t FdCloseInBackground(const int* fds, size_t n, uint64_t owner, bool held_for_peer);
// FdCloseInBackground of the copies `owner`'s ledger was given
// (FdDupAllGiven) and that no command adopted: fds[i] is closed only while
// its registration is still one given to `owner`, and only while it holds
// the file recorded when it was made (checked just before the close, as
// for any fd of ours). Left alone is a number whose copy someone else
// closed: one a new fd of ours took since (another ledger's copy, a
// socket: that registration ended then, FdMarkNew), and one holding
// another file or none (the program's: the copy's registration ends as
// closed by someone else, FdClosedByOther). Counted as peer fds
// (held_for_peer). The ticket is 0 when none is left to close.
// `given_to`: the ledger's mark when it is not `owner` (a helper daemon's
// connection: each connection's copies are marked apart, FdMarkGiven, and
// closed as its uid's, `owner`); 0 for `owner`.
uint64_t FdCloseGivenInBackground(const int* fds, size_t n, uint64_t owner, uint64_t given_to = 0);
// FdCloseInBackground of fds a command holds as its client's
// (CommandContext.closeClientFds: adopted, or received by the command
// itself), none of them fdbridge's: one that is one of fdbridge's own fds
// now (a registration at its number: a copy given to a command and not
// adopted, another client's copy or connection socket that took the number
// of one the command closed by itself) is refused, and so is one whose
// `expected` file (expected[i], when `expected` is not null and it is set:
// the file an adopted copy was given with) is not the file at the number
// (read as it is handed over: the command closed that fd itself, and the
// number is free, or another file, another command's adopted fd), and so is
// one whose number's install generation is not installs[i] (when `installs`
// is not null: the one the command held it with, FdInstallGenerations; an
// fd fdbridge put there since is another's, whatever its file). Then
// -EBADF, *refused that number, nothing handed over and *ticket 0. A list
// that names one number twice (the second close could close another fd
// that took the number after the first) is refused whole the same way,
// with -EINVAL and *refused that number. Else 0, *refused -1 and *ticket
// the batch's. Checked as they are handed over,
// the registrations and install generations under the registry's lock; a
// registration made at one of the numbers after that, or another install
// there, is left alone by the close: the closer looks again in one hold of
// the lock, makes a copy above the floor and marks the number as being
// closed (as FdCloseCallers does), then closes the number and the copy
// with the lock let go (either close may wait in the file's flush).
int FdCloseClientFdsInBackground(const int* fds, size_t n, uint64_t owner, const std::optional<FdIdentity>* expected,
                                 const uint64_t* installs, uint64_t* ticket, int* refused);
// Whether the batch `ticket` is done (every fd of it closed). A ticket
// FdCloseInBackground never gave is not.
bool FdBackgroundCloseDone(uint64_t ticket);
// Whether FdCloseInBackground has given `ticket` (or it is 0).
bool FdBackgroundCloseIssued(uint64_t ticket);
// Removes from *tickets those that are done.
void FdDropDoneTickets(std::vector<uint64_t>* tickets);
// The tickets of every batch not done yet.
std::vector<uint64_t> FdOpenBackgroundCloses();
// Runs `then` once every batch of tickets[0..n) is done: at once, on the
// calling thread, when they are; else on a closer thread, right after the
// close that completes the last of them (so `then` must only hand the news
// on, e.g. to an event loop, and must not call back in here).
void FdAfterBackgroundCloses(const uint64_t* tickets, size_t n, std::function<void()> then);
// fds handed to FdCloseInBackground and not yet closed.
size_t FdBackgroundClosesPending();
// Their numbers: *queued, those no thread has taken yet (open, and the
// closer's: nothing else can close them); *running, those a thread is
// closing (in the table until close(2) takes them out, which it does
// before the part that can block; the number may be another fd's after).
void FdBackgroundCloseFds(std::vector<int>* queued, std::vector<int>* running);
// Of those, the ones a peer gave us (held_for_peer).
size_t FdBackgroundClosesOfPeerFds();
// Of those, `owner`'s: a helper daemon counts them against that uid's fd
// limit, so that one user cannot fill the daemon's total with fds whose
// closes it made block.
size_t FdBackgroundClosesOfPeerFds(uint64_t owner);
// The others, our own sockets to peers (held_for_peer false), that are
// held up: every one of `owner`'s (or of all owners) while its closes have
// no thread to spare (kCloserThreadsPerOwner of them in a close, or one
// while the shared threads are all in a close, or the reserve's too), none
// otherwise. A close that blocks
// holds a thread; once its owner's threads all do, its sockets wait behind
// them, each holding an fd, for as long as the closes block: a helper
// daemon counts them against the connections of the owner's uid. The rest
// are closed at once (a free thread takes them): not counting them spares
// an honest client that closes and connects again a refusal while its
// last socket is still in the queue. So the sockets not counted are at
// most one per closer thread.
size_t FdBackgroundClosesOfOwnSockets();
size_t FdBackgroundClosesOfOwnSockets(uint64_t owner);
// How many background closes have finished since the process started.
uint64_t FdBackgroundClosesDone();
// The closer's threads now, how many of them are in a close, and how
// many it ever started.
void FdCloserThreads(size_t* threads, size_t* busy, uint64_t* made);
// Adds `owners` (negative: gives back what was added) to the owners the
// reserve is kept for, and returns the reserve now: as many threads as
// every caller's owners together, at least kCloserReserveThreads and at
// most kMaxCloserReserveThreads.
size_t FdReserveCloserThreads(int64_t owners);
// The reserve now, and the owners asked for (FdReserveCloserThreads).
void FdCloserReserve(size_t* reserve, size_t* owners);

// poll(2) of one fd with no wait: its revents, i.e. those of `events` that
// hold now plus POLLHUP / POLLERR / POLLNVAL (which poll always reports);
// 0 when none hold, or when poll itself fails. Retries EINTR.
int PollNow(int fd, short events);

// poll(2) with no wait: for each of fds[0..n), whether it is readable (or
// hung up / in error) now. A pidfd is readable once its process has exited.
int FdPollReadable(const int* fds, size_t n, std::vector<bool>* out);

// A POSIX record lock (fcntl F_SETLK) of the whole file through `fd`:
// type F_RDLCK, F_WRLCK or F_UNLCK. Owned by the process: any close of any
// fd of the file by the process drops it (fcntl(2), "Record locking").
int FdPosixLock(int fd, int type);
// F_OFD_GETLK of a write lock on the whole file through `fd`: the type of
// a lock that conflicts with it (F_RDLCK, F_WRLCK), or F_UNLCK. An OFD lock
// conflicts with the POSIX locks of its own process too, so this sees
// whether this process still holds one.
int FdConflictingLock(int fd);

// The device, inode number and mode (file type and permission bits) of the
// file at `fd`, as the kernel has them: statx(2) with AT_EMPTY_PATH |
// AT_STATX_DONT_SYNC asks no filesystem for fresh attributes (fstat(2) can
// wait on a hung NFS server, or on a FUSE server a peer runs, blocking the
// calling thread for as long), so it is safe on an event loop for any file,
// a client's included. Every read of a file's identity or type goes through
// it. -EBADF: `fd` is not open.
int FdFileIdentity(int fd, FdIdentity* out);
// Whether `a` and `b` are one file (device and inode).
inline bool SameFile(const FdIdentity& a, const FdIdentity& b) { return a.dev == b.dev && a.ino == b.ino; }
// Whether `fd` holds `file` now (one FdFileIdentity): false for another
// file at the number or none.
inline bool FdHoldsFile(int fd, const FdIdentity& file) {
  FdIdentity now;
  return FdFileIdentity(fd, &now) == 0 && SameFile(now, file);
}
// Whether a copy once at `fd` is gone from it: the number is free, or,
// when its file is `known`, holds another file than `file` (one
// FdFileIdentity). A copy whose file is not known is told gone only by a
// free number (one fcntl F_GETFD, no statx).
bool FdFileGone(int fd, bool known, const FdIdentity& file);

// Bit 0: FD_CLOEXEC, bit 1: O_NONBLOCK.
int FdGetFlags(int fd);
int FdSetCloexec(int fd, bool on);
int FdSetNonblock(int fd, bool on);

// The open-fd table of a process. pid <= 0 means the calling process; the
// directory stream used to read the table is not reported. With `files`,
// each entry's file too, in the same walk. (The leak checker's holds,
// fd_hold.h, are in a table of their own, never in this one.) With no fd
// number free in this process (EMFILE), read on a thread whose fd table is
// its own, as those holds are.
int FdList(pid_t pid, std::vector<FdEntry>* out, bool files = false);

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
// PidfdGetfd's install is noted by its caller (PidfdGetfdAllHigh's MarkNew,
// under the lock held across both).
int PidfdGetfd(int pidfd, int target_fd);
// pidfd_getfd, moved at or above FdFloor() (pidfd_getfd has no minimum: it
// takes the lowest free number, which is then released at once), and
// registered as ours.
int PidfdGetfdHigh(int pidfd, int target_fd);
// PidfdGetfdHigh for targets[0..n) into out[0..n), all or none (on failure
// nothing pulled stays open), as one step under one OwnedFdsLock: every
// fd is pulled first, those below the floor are then moved above it
// together, and the low numbers they leave are closed a run of consecutive
// numbers at a time (close_range(2), one call where the pulls took
// consecutive numbers, as they do in a table with no holes).
// With `expected` (n files), each pull must be expected[i]'s file (device
// and inode, FdFileIdentity of the pulled fd): one that is another was
// pulled from a number the client's program closed and reopened on another
// file; then every pull is closed, -EBADF returned and *swapped set to its
// index (untouched otherwise).
int PidfdGetfdAllHigh(int pidfd, const int* targets, size_t n, int* out, const FdIdentity* expected = nullptr,
                      size_t* swapped = nullptr);
// FdClose for each of fds[0..n): how many closed (an fd that was not open,
// or a negative number, is passed over, as a failed close would be).
size_t FdCloseAll(const int* fds, size_t n);

}  // namespace fdbridge

#endif  // FDBRIDGE_FD_OPS_H_
