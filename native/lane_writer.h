// Lanes of writer threads: writes into fds that other processes gave (a
// helper daemon's log command writes its clients' lines into the files,
// pipes, sockets and terminals they redirected it to). No Node-API.
//
// A write into such an fd can block for as long as the fd's owner likes (a
// pipe it never reads, a socket whose peer stops reading, a terminal whose
// output is stopped, a file on a hung or hostile filesystem). On libuv's
// pool (4 threads by default, shared with every fs call of the process) a
// few such writes would hold back everyone's. So each write runs on a
// thread of its `owner`'s lane (a helper daemon passes the client's uid
// plus one, as for the background closer; 0 for anyone else): at most
// kLaneThreadsPerOwner threads an owner, made when its writes wait and no
// thread of its lane is free, gone once the lane is empty. An owner whose
// writes block holds back its own writes only; the threads are at most
// kLaneThreadsPerOwner times the owners (a helper daemon's: the uids it
// serves, plus one).
//
// Only files that take text are written into (LaneTargetRefusal): an
// eventfd, say, takes each 8-byte write as a number added to its counter,
// and the write that would overflow it blocks until someone reads it; the
// lane's copy may be its only one, so that the thread would never return.
//
// A write never blocks where it can wait instead: into a pipe, FIFO or
// socket it is pwritev2(RWF_NOWAIT) (the client's open file description,
// and its O_NONBLOCK, are left alone), and when the fd takes no more the
// thread waits in poll(2) for it to take more or for a cancel
// (LaneWriteCancel). Into anything else (a regular file, a terminal) it is
// write(2), which may block in the kernel; such a write cannot be cancelled
// and holds its lane thread until it returns (the owner's other writes wait
// meanwhile, nobody else's).
//
// Each write goes to a copy of the fd made when it is handed over (above
// the fd floor, registered as fdbridge's), so the number the caller holds
// may be closed (and reused) meanwhile without the line reaching another
// file. The copy is closed on the background closer, as `owner`'s (the
// last close of a lingering socket blocks), and the write's `done` runs
// once it is closed. The copy's file is read as it is made (a statx, no
// filesystem asked) and compared before its first write, after each wait
// for room, and before its close: a number the program closed behind
// fdbridge's back, and another file took, is never written into nor
// closed (the write fails EBADF), and LaneWriterFds leaves it out.
#ifndef FDBRIDGE_LANE_WRITER_H_
#define FDBRIDGE_LANE_WRITER_H_

#include <stddef.h>
#include <stdint.h>

#include <functional>
#include <string>
#include <vector>

namespace fdbridge {

constexpr size_t kLaneThreadsPerOwner = 2;
// A write needs little stack.
constexpr size_t kLaneThreadStack = 256 * 1024;
// The lane threads' name (at most 15 characters).
constexpr const char* kLaneThreadName = "fdbridge-log";

// A new cancel group (never 0, never reused): one per writer whose writes
// end together (LaneWriteCancel).
uint64_t LaneNewGroup();

// Writes all of `data` into a copy of `fd`, on a thread of `owner`'s lane,
// after the owner's writes handed over before it that wait for a thread.
// done(r) runs on some other thread once the copy is closed: r is the bytes
// written (all of them) or -errno: that of the failed write (EPIPE, EBADF,
// ...), -ECANCELED when LaneWriteCancel(group) ended it (some of the bytes
// may have been written), -EAGAIN when the lane had no thread and none
// could be made (RLIMIT_NPROC, TasksMax). Returns 0, or -errno when the
// copy could not be made (done is not called then).
// `on_cancel(by)`, if given, runs in LaneWriteCancel(group, by) while this
// write is not done yet (never after done has begun): for a caller that
// stops waiting for done then (a loop that may end without it).
int LaneWrite(int fd, std::string data, uint64_t owner, uint64_t group, std::function<void(int64_t)> done,
              std::function<void(const void*)> on_cancel = nullptr);

// Ends `group`'s writes: those waiting for a thread end at once
// (-ECANCELED, their copies handed to the closer, their data freed); one
// waiting in poll for its fd to take more ends as soon as its thread wakes;
// one inside write(2) (not a pipe or socket) ends when that write returns.
// Each one's on_cancel(by) runs first, on this thread, under the lanes'
// lock (it must not call in here).
void LaneWriteCancel(uint64_t group, const void* by = nullptr);

// Whether a lane writes into `fd`: 0 for a file that takes text and is
// open for writing (a regular file, a pipe or FIFO, a socket, a character
// device: a terminal, /dev/null), else -errno: EBADF for no open fd or one
// not open for writing (O_PATH, O_RDONLY), EISDIR for a directory, EINVAL
// for any other file (an anonymous inode: eventfd, timerfd, signalfd,
// epoll, inotify, pidfd...; a block device). Looks at the fd only (fcntl,
// statx without a sync, the /proc/self/fd link): no call into a
// filesystem that may hang. LaneWrite's `done` gets this -errno, nothing
// written, for a refused fd.
int LaneTargetRefusal(int fd);

// The lanes' threads now, how many of them are in a write, the writes
// waiting for a thread, and the owners with a lane.
void LaneWriterStats(size_t* threads, size_t* busy, size_t* queued, size_t* owners);

// The numbers of the fds the lanes hold now: each write's copy, from the
// LaneWrite that made it until it is in the closer's hands (so a copy is
// always in this list or FdBackgroundCloseFds' when the two are read in
// that order), and the eventfd of each write waiting for its fd to take
// more, until it is closed. A copy stays here for as long as its write(2)
// does not return (a terminal whose output is stopped).
std::vector<int> LaneWriterFds();

}  // namespace fdbridge

#endif  // FDBRIDGE_LANE_WRITER_H_
