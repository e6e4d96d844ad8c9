// The leak checker's view of open-fd tables: each fd's file identity read
// from /proc, and references that keep a baseline's files from being freed
// while a check runs. Plain POSIX, no Node-API. FdReadFileId, FdFileId and
// the live-hold bookkeeping are defined in fd_ops.cc (FdList uses them, and
// fd_ops.cc builds alone in the native tests); the holds in fd_hold.cc.
#ifndef FDBRIDGE_FD_HOLD_H_
#define FDBRIDGE_FD_HOLD_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <string>
#include <unordered_map>
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

// The holds alive in this process: each one's socket number -> its file.
// A listing of our own table with files leaves these out (FdList).
std::unordered_map<int, std::string> FdLiveHolds();
// Live-hold bookkeeping for FdHoldFiles / FdReleaseHold: `fd` is a hold's
// socket, `file` its "mnt_id:ino"; removed only while it is that one.
void FdHoldsAdd(int fd, const std::string& file);
void FdHoldsRemove(int fd, const std::string& file);

// How many holds are alive in this process: made, not released, and their
// socket still open (a worker thread's teardown closes the fds registered
// for it, a hold of a check it was running among them).
size_t FdLiveHoldCount();

// A hold: one Unix socket of ours (numbered at or above FdFloor(), registered
// as ours) whose receive queue carries an O_PATH reference to each file held.
struct FdHold {
  int fd = -1;
  std::string file;            // the socket's own "mnt_id:ino": how it is told from a stranger at its number
  uint64_t registration = 0;   // its OwnedFds registration (FdRegistration)
};

// Holds the files that fds[0..n) of process `pid` refer to: for each,
// open("/proc/<pid>/fd/N", O_PATH) -- the magic link's jump (nd_jump_link)
// gives the open file's own path, so the reference is to the very dentry and
// inode the fd uses -- sent with SCM_RIGHTS into a socket pair whose sending
// end is then closed. Queued there, the references are in no fd table: a
// close_range() by the code under test cannot drop them one by one; it can
// only close the hold's socket, which FdHoldIntact sees. The socket is
// named "@fdbridge-leak-check-hold:<pid>:<n>" (abstract), so that a reader
// of our table from outside can tell it by its inode in /proc/<pid>/net/unix.
//
// While a file is held its inode cannot be evicted, so its inode number is
// not handed to a new file (ext4, xfs reuse freed numbers at once): the
// (mnt_id, ino) of fdinfo names that one file for the hold's lifetime.
// O_PATH because such a file is no opener of the inode (do_dentry_open
// returns before f_op->open: no fifo_open, so it counts as no pipe reader or
// writer; no driver open), its close drops no POSIX lock of the process
// (filp_flush skips locks_remove_posix for FMODE_PATH), it raises no fsnotify
// events, takes no i_readcount/i_writecount (leases are unaffected), and a
// socket's release still runs when the last real file closes (the socket's
// f_op->release belongs to that file, not to the inode).
//
// held->at(i) is the file held for fds[i] ("mnt_id:ino" read from the held
// reference itself), or empty when it could not be opened (closed since,
// not ours to open). Returns 0 or -errno (EAGAIN: the socket's send buffer
// is full; ETOOMANYREFS: the user's in-flight fd limit); on failure nothing
// is held.
int FdHoldFiles(pid_t pid, const int* fds, size_t n, FdHold* hold, std::vector<std::string>* held);

// True while the hold's number is still its socket (the code under test
// may have closed it, and another file may have taken the number).
bool FdHoldIntact(const FdHold& hold);

// Ends a hold: closes its socket, which drops every reference queued in it
// (unix_release_sock purges the queue; the last fput of each O_PATH file is
// done before close(2) returns). Returns 0, or -ESTALE when the hold was lost
// (its number no longer its socket): then nothing is closed, since the
// number is someone else's now.
int FdReleaseHold(const FdHold& hold);

}  // namespace fdbridge

#endif  // FDBRIDGE_FD_HOLD_H_
