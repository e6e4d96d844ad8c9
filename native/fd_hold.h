// The leak checker's view of open-fd tables: each fd's file identity read
// from /proc, and references that keep a baseline's files from being freed
// while a check runs. Plain POSIX, no Node-API. FdReadFileId and FdFileId
// are defined in fd_ops.cc (FdList uses them, and fd_ops.cc builds alone in
// the native tests); the holds in fd_hold.cc.
#ifndef FDBRIDGE_FD_HOLD_H_
#define FDBRIDGE_FD_HOLD_H_

#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace fdbridge {

// "mnt_id:ino" from the fdinfo file `name` in the directory `dir` (a
// /proc/<pid>/fdinfo), or -errno (-ENODATA when it has no such lines: a
// kernel before 5.14 has no ino line). fdinfo, not stat(2) through the
// magic link: a stat asks the file's filesystem (a hung NFS server or FUSE
// daemon would hang the caller), fdinfo reads the open file alone.
int FdReadFileId(int dir, const char* name, std::string* out);

// "mnt_id:ino" of fd `fd` of process `pid` (<= 0: this process), or -errno.
int FdFileId(pid_t pid, int fd, std::string* out);

// How many holds are alive in this process: made and not released (an
// environment's teardown releases those made for it: a worker thread
// terminated mid-check).
size_t FdLiveHoldCount();

// A hold: a thread of this process with an fd table of its own, whose
// entries are an O_PATH reference to each file held. `id` names it in the
// process's registry; `tid` is the thread (its table reads from
// /proc/<pid>/task/<tid>/fd).
struct FdHold {
  uint64_t id = 0;
  pid_t tid = 0;
};

// Holds the files that fds[0..n) of process `pid` refer to: for each,
// open("/proc/<pid>/fd/N", O_PATH) -- the magic link's jump (nd_jump_link)
// gives the open file's own path, so the reference is to the very dentry and
// inode the fd uses -- made by a thread that first gave itself a new, empty
// fd table (close_range(0, ~0U, CLOSE_RANGE_UNSHARE): dup_fd copies no entry
// of the shared table, so it takes no reference to any of the process's
// files), and kept in that table until the hold is released.
//
// Kept in a table, the references are nowhere in flight: fds queued in a
// Unix socket count against the sending user's RLIMIT_NOFILE-bounded
// in-flight total (unix_inflight, ETOOMANYREFS past it), and a check must
// not lower what the code under test may send. Kept in another table than
// the process's, they take no number of it, /proc/<pid>/fd does not list
// them (it shows the thread-group leader's table), and nothing the code
// under test does to its table (close_range over all of it, closefrom)
// reaches them. The thread runs with every signal blocked (a process's
// signal must go to a thread whose fds its handler can use), is no child
// (nothing to reap, no SIGCHLD), and ends with the process. Its table is
// bounded by the process's RLIMIT_NOFILE like any other: it needs one entry
// per file held plus one for the /proc directory.
//
// While a file is held its inode cannot be evicted, so its inode number is
// not handed to a new file (ext4, xfs reuse freed numbers at once): the
// (mnt_id, ino) of fdinfo names that one file for the hold's lifetime.
// O_PATH because such a file is no opener of the inode (do_dentry_open
// returns before f_op->open: no fifo_open, so it counts as no pipe reader or
// writer; no driver open), its close drops no POSIX lock of the process
// (filp_flush skips locks_remove_posix for FMODE_PATH; and its table is not
// the one the locks belong to), it raises no fsnotify events, takes no
// i_readcount/i_writecount (leases are unaffected), and a socket's release
// still runs when the last real file closes (the socket's f_op->release
// belongs to that file, not to the inode).
//
// `owner` is the environment it is made for (InstanceData::holder):
// FdReleaseHoldsOf(owner) at that environment's teardown ends it.
// held->at(i) is the file held for fds[i] ("mnt_id:ino" read from the held
// reference itself), or empty when it could not be opened (closed since,
// not ours to open). Returns 0 or -errno (EMFILE: the references do not
// fit in a table under RLIMIT_NOFILE; ENOSYS: no close_range, before Linux
// 5.9); on failure nothing is held.
int FdHoldFiles(pid_t pid, const int* fds, size_t n, uint64_t owner, FdHold* hold, std::vector<std::string>* held);

// Ends a hold: its thread closes its table (close_range), which drops every
// reference (the last fput of each O_PATH file is done before that call
// returns to the thread), and has ended when this returns. Returns 0, or
// -ESTALE when there is no such hold (released already).
int FdReleaseHold(const FdHold& hold);

// Ends every hold made for environment `owner` (its teardown).
void FdReleaseHoldsOf(uint64_t owner);

// Starts `main(arg)` on a new thread with every signal blocked and a small
// stack (what runs there calls nothing deep): the threads that work in an
// fd table of their own (the holds; FdList's walk of a full table). 0 or
// -errno.
int StartQuietThread(pthread_t* thread, void* (*main)(void*), void* arg);

}  // namespace fdbridge

#endif  // FDBRIDGE_FD_HOLD_H_
