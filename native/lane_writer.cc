#include "lane_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "fd_ops.h"

namespace fdbridge {

namespace {

struct Job {
  int fd;  // our copy
  // The copy's file as it was made (FdFileIdentity) and its registration:
  // a number closed behind fdbridge's back and taken by another file (the
  // program's) is never written into nor closed (CopyHeld).
  FdIdentity file;
  uint64_t registration;
  std::string data;
  uint64_t owner;
  uint64_t group;
  std::function<void(int64_t)> done;
  std::function<void(const void*)> on_cancel;  // run by LaneWriteCancel under Writer::mu
  // Under Writer::mu: LaneWriteCancel was called for the group.
  bool cancelled = false;
  // Under Writer::mu: the eventfd the thread polls beside the fd while it
  // waits for the fd to take more (-1 otherwise); a cancel writes to it.
  int wake = -1;
};

struct Lane {
  std::deque<std::shared_ptr<Job>> queue;
  size_t threads = 0;
  size_t busy = 0;
};

struct Writer {
  std::mutex mu;
  std::unordered_map<uint64_t, Lane> lanes;
  std::unordered_set<std::shared_ptr<Job>> running;
  // The fds the writer holds: each write's copy, from its dup until the
  // closer has it or it is let go of, and each waiting write's eventfd
  // (LaneWriterFds). A copy's entry has its job, to check its file.
  std::unordered_map<int, std::shared_ptr<Job>> fds;
  size_t threads = 0;
  size_t busy = 0;
  size_t queued = 0;
};

Writer& TheWriter() {
  static Writer* w = new Writer();  // never destroyed: its threads may outlive every environment
  return *w;
}

std::atomic<uint64_t> next_group{1};

// Whether `fd` (`job`'s copy) still holds the file it was made with (one
// statx(2), no filesystem asked). One that does not was closed behind
// fdbridge's back (a program's fs.closeSync of a number it does not own):
// its registration ends as closed by someone else (FdClosedByOther, which a
// watching leak check blames), and the number, free or another file now,
// is the program's: never written into nor closed here.
bool CopyHeld(int fd, const Job& job) {
  if (FdHoldsFile(fd, job.file)) return true;
  FdStillHeldLooked(fd, job.registration, /*same_file=*/false);
  return false;
}

// Hands the copy to the closer as the owner's, and the result to `done`
// once it is closed. A copy that no longer holds its file (CopyHeld) is
// let go of unclosed, and a write that had succeeded fails EBADF then:
// the file is not known to have had all of it.
void Finish(const std::shared_ptr<Job>& job, int64_t result) {
  int fd = job->fd;
  job->fd = -1;
  std::string().swap(job->data);
  uint64_t ticket = 0;
  if (CopyHeld(fd, *job)) {
    ticket = FdCloseInBackground(&fd, 1, job->owner, /*held_for_peer=*/true);
  } else if (result >= 0) {
    result = -EBADF;
  }
  {
    // The writer's until the closer has it: never out of both lists.
    std::lock_guard<std::mutex> lock(TheWriter().mu);
    TheWriter().fds.erase(fd);
  }
  auto done = std::move(job->done);
  FdAfterBackgroundCloses(&ticket, 1, [done, result]() { done(result); });
}

// Waits until `job`'s fd takes more (or hangs up, or errs: the next write
// says which), or the job is cancelled. 0, or -errno.
int WaitWritable(const std::shared_ptr<Job>& job) {
  Writer& w = TheWriter();
  int wake;
  {
    OwnedFdsLock lock;  // made and registered as one step
    int e = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);  // installed: FdOwnHigh below
    wake = FdOwnHigh(e < 0 ? -errno : e);
  }
  if (wake < 0) return wake;
  FdHeldByNative(&wake, 1);
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(w.mu);
    w.fds.emplace(wake, nullptr);
    cancelled = job->cancelled;
    if (!cancelled) job->wake = wake;
  }
  int r = 0;
  if (cancelled) {
    r = -ECANCELED;
  } else {
    struct pollfd p[2] = {{job->fd, POLLOUT, 0}, {wake, POLLIN, 0}};
    for (;;) {
      int n = poll(p, 2, -1);
      if (n >= 0) break;
      if (errno != EINTR) {
        r = -errno;
        break;
      }
    }
    if (r == 0 && (p[1].revents & POLLIN)) r = -ECANCELED;
    if (r == 0 && (p[0].revents & POLLNVAL)) r = -EBADF;
    std::lock_guard<std::mutex> lock(w.mu);
    job->wake = -1;
    if (job->cancelled) r = -ECANCELED;
  }
  FdClose(wake);
  {
    std::lock_guard<std::mutex> lock(w.mu);
    w.fds.erase(wake);
  }
  return r;
}

// LaneTargetRefusal of `fd`, whose file (FdFileIdentity: the type only,
// no filesystem asked; on a file whose filesystem hangs the write blocks
// this lane's thread anyway) is `file`.
int TargetRefusal(int fd, const FdIdentity& file) {
  switch (file.mode & S_IFMT) {
    case S_IFIFO:
    case S_IFSOCK:
    case S_IFCHR:
    case S_IFREG:
      break;
    case S_IFDIR:
      return -EISDIR;
    default:
      // An anonymous inode (no type: eventfd, timerfd, signalfd, epoll,
      // pidfd...), a block device.
      return -EINVAL;
  }
  // An anonymous inode is typeless above, but a kernel may give it the
  // type of a regular file: /proc/self/fd names it "anon_inode:..."
  // whatever its type (readlink asks no filesystem).
  if (S_ISREG(file.mode)) {
    char path[32];
    char target[16];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof(target));
    if (n >= 11 && memcmp(target, "anon_inode:", 11) == 0) return -EINVAL;
  }
  // After the type, so that a directory (never open for writing) is told as one.
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -errno;
  // O_PATH: open for no I/O (write(2) fails EBADF); O_RDONLY: not for writing.
  if ((flags & O_PATH) != 0 || (flags & O_ACCMODE) == O_RDONLY) return -EBADF;
  return 0;
}

// All of the job's data, or -errno.
int64_t WriteAll(const std::shared_ptr<Job>& job) {
  FdIdentity file;
  int r = FdFileIdentity(job->fd, &file);
  if (r != 0) return r;
  // Still the copy's file? (It waited for a thread: its number may have
  // been closed behind our back and taken by the program's file.)
  if (!SameFile(file, job->file)) return -EBADF;
  r = TargetRefusal(job->fd, file);
  if (r != 0) return r;
  const uint32_t mode = file.mode;
  // Pipes, FIFOs and sockets take RWF_NOWAIT (the call fails with EAGAIN
  // where it would block); other files refuse it (EOPNOTSUPP) or would
  // take it to mean something else (a regular file's EAGAIN is not one
  // poll can wait out).
  bool nowait = S_ISFIFO(mode) || S_ISSOCK(mode);
  size_t off = 0;
  const size_t len = job->data.size();
  while (off < len) {
    {
      std::lock_guard<std::mutex> lock(TheWriter().mu);
      if (job->cancelled) return -ECANCELED;
    }
    ssize_t n;
    if (nowait) {
      struct iovec v = {const_cast<char*>(job->data.data()) + off, len - off};
      n = pwritev2(job->fd, &v, 1, -1, RWF_NOWAIT);
      if (n < 0 && errno == EOPNOTSUPP) {
        nowait = false;  // a kernel whose pipes take no RWF_NOWAIT (before 5.x): write(2) then
        continue;
      }
    } else {
      n = write(job->fd, job->data.data() + off, len - off);
    }
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || errno == EAGAIN) {
      // Full (or the client's O_NONBLOCK on a file that is): wait for room.
      int r = WaitWritable(job);
      if (r < 0) return r;
      // The wait can be long: the number may hold another file by now.
      if (!CopyHeld(job->fd, *job)) return -EBADF;
      continue;
    }
    return -errno;
  }
  return static_cast<int64_t>(off);
}

void* LaneThread(void* arg) {
  uint64_t owner = reinterpret_cast<uintptr_t>(arg);
  pthread_setname_np(pthread_self(), kLaneThreadName);  // for /proc/<pid>/task/*/comm
  Writer& w = TheWriter();
  std::unique_lock<std::mutex> lock(w.mu);
  for (;;) {
    Lane& lane = w.lanes[owner];
    if (lane.queue.empty()) {
      lane.threads--;
      w.threads--;
      if (lane.threads == 0) w.lanes.erase(owner);
      return nullptr;
    }
    std::shared_ptr<Job> job = std::move(lane.queue.front());
    lane.queue.pop_front();
    w.queued--;
    lane.busy++;
    w.busy++;
    w.running.insert(job);
    lock.unlock();
    int64_t r = WriteAll(job);
    lock.lock();
    w.running.erase(job);
    w.lanes[owner].busy--;
    w.busy--;
    lock.unlock();
    Finish(job, r);
    lock.lock();
  }
}

// One more thread for `owner`'s lane. Under w.mu. False when none could be made.
bool SpawnLocked(Writer& w, uint64_t owner, Lane& lane) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, kLaneThreadStack);
  pthread_t t;
  bool made = pthread_create(&t, &attr, LaneThread, reinterpret_cast<void*>(static_cast<uintptr_t>(owner))) == 0;
  pthread_attr_destroy(&attr);
  if (made) {
    lane.threads++;
    w.threads++;
  }
  return made;
}

}  // namespace

uint64_t LaneNewGroup() { return next_group.fetch_add(1); }

int LaneTargetRefusal(int fd) {
  FdIdentity file;
  int r = FdFileIdentity(fd, &file);
  return r != 0 ? r : TargetRefusal(fd, file);
}

int LaneWrite(int fd, std::string data, uint64_t owner, uint64_t group, std::function<void(int64_t)> done,
              std::function<void(const void*)> on_cancel) {
  int copy;
  uint64_t registration;
  {
    OwnedFdsLock lock;  // made and registered as one step
    copy = FdDupHigh(fd);
    registration = copy < 0 ? 0 : FdRegistration(copy);
  }
  if (copy < 0) return copy;
  FdHeldByNative(&copy, 1);  // ours until the closer has it, whatever environment asked
  auto job = std::make_shared<Job>();
  job->fd = copy;
  job->registration = registration;
  if (int r = FdFileIdentity(copy, &job->file); r != 0) {
    // Closed by another thread as it was made: let go of.
    FdStillHeldLooked(copy, registration, /*same_file=*/false);
    return r;
  }
  job->data = std::move(data);
  job->owner = owner;
  job->group = group;
  job->done = std::move(done);
  job->on_cancel = std::move(on_cancel);
  Writer& w = TheWriter();
  bool no_thread = false;
  {
    std::lock_guard<std::mutex> lock(w.mu);
    w.fds.emplace(copy, job);
    Lane& lane = w.lanes[owner];
    lane.queue.push_back(job);
    w.queued++;
    // Every thread of the lane is in a write (or about to take one of the
    // writes queued before this): one more, up to the owner's share.
    if (lane.threads < kLaneThreadsPerOwner && lane.threads - lane.busy < lane.queue.size()) {
      if (!SpawnLocked(w, owner, lane) && lane.threads == 0) {
        lane.queue.pop_back();
        w.queued--;
        w.lanes.erase(owner);
        no_thread = true;
      }
    }
  }
  if (no_thread) Finish(job, -EAGAIN);
  return 0;
}

void LaneWriteCancel(uint64_t group, const void* by) {
  Writer& w = TheWriter();
  std::vector<std::shared_ptr<Job>> ended;
  {
    // A running job leaves w.running under this lock before its Finish:
    // its on_cancel runs here before its done, or not at all.
    std::lock_guard<std::mutex> lock(w.mu);
    for (auto& [owner, lane] : w.lanes) {
      for (auto it = lane.queue.begin(); it != lane.queue.end();) {
        if ((*it)->group == group) {
          if ((*it)->on_cancel) (*it)->on_cancel(by);
          ended.push_back(std::move(*it));
          it = lane.queue.erase(it);
          w.queued--;
        } else {
          ++it;
        }
      }
    }
    for (const auto& job : w.running) {
      if (job->group != group) continue;
      if (job->on_cancel) job->on_cancel(by);
      job->cancelled = true;
      if (job->wake >= 0) eventfd_write(job->wake, 1);
    }
  }
  for (const auto& job : ended) Finish(job, -ECANCELED);
}

void LaneWriterStats(size_t* threads, size_t* busy, size_t* queued, size_t* owners) {
  Writer& w = TheWriter();
  std::lock_guard<std::mutex> lock(w.mu);
  *threads = w.threads;
  *busy = w.busy;
  *queued = w.queued;
  *owners = w.lanes.size();
}

std::vector<int> LaneWriterFds() {
  Writer& w = TheWriter();
  std::vector<std::pair<int, std::shared_ptr<Job>>> held;
  {
    std::lock_guard<std::mutex> lock(w.mu);
    held.assign(w.fds.begin(), w.fds.end());
  }
  // A copy whose number holds another file now (or none) is not the
  // writer's: the program closed it behind our back, and the file there is
  // the program's (one statx per copy, outside the lock: a leak check's
  // path). Only read here: the write's own thread lets go of it.
  std::vector<int> out;
  out.reserve(held.size());
  for (const auto& [fd, job] : held) {
    if (job == nullptr || FdHoldsFile(fd, job->file)) out.push_back(fd);
  }
  return out;
}

}  // namespace fdbridge
