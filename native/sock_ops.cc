#include "sock_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "fd_ops.h"
#include "unique_fd.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // include/uapi/asm-generic/socket.h, Linux 6.5
#endif
#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83  // include/uapi/asm-generic/socket.h, Linux 6.16
#endif
#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76  // include/uapi/asm-generic/socket.h, Linux 6.5
#endif

namespace fdbridge {

int SockAddress(const char* name, size_t name_len, bool abstract, struct sockaddr_un* addr,
                socklen_t* addr_len) {
  if (name_len == 0) return -EINVAL;
  if (name_len > kMaxSocketPathBytes) return -ENAMETOOLONG;
  if (!abstract && memchr(name, '\0', name_len) != nullptr) return -EINVAL;
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  size_t offset = abstract ? 1 : 0;  // abstract: sun_path[0] == '\0'
  memcpy(addr->sun_path + offset, name, name_len);
  // An abstract name is exactly the bytes given (no terminator); a path is
  // NUL-terminated (the memset above wrote it).
  *addr_len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + offset + name_len +
                                     (abstract ? 0 : 1));
  return 0;
}

namespace {

// A new socket of `type`: the fd or -errno.
int NewSocket(int type, bool own) {
  OwnedFdsLock lock;  // from before socket(2) until it is moved and registered, or its install noted
  int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);  // installed: FdInstalled or FdOwnHigh below
  if (!own) return FdInstalled(fd < 0 ? -errno : fd);
  return FdOwnHigh(fd < 0 ? -errno : fd);
}

// The address for `name` and a new socket of `type` to use it with.
int NewSocketFor(int type, const char* name, size_t name_len, bool abstract, bool own,
                 struct sockaddr_un* addr, socklen_t* addr_len, UniqueFd* out) {
  int err = SockAddress(name, name_len, abstract, addr, addr_len);
  if (err != 0) return err;
  int fd = NewSocket(type, own);
  if (fd < 0) return fd;
  out->reset(fd);
  return 0;
}

// chmod the socket file at `path`, which bind() just created, without
// following a symlink (or touching any other file) put there since: someone
// with write access to the directory can swap the path between bind() and
// here. O_PATH|O_NOFOLLOW opens a symlink itself, never its target; the
// checks then refuse anything but a socket file owned by us (bind creates it
// with our fsuid), and the chmod goes through /proc/self/fd to that very
// inode, so a second swap after the checks changes nothing. On success *out
// holds the file's identity, for UnlinkOwnSocketFile.
int ChmodSocketFile(const char* path, int mode, struct stat* out) {
  UniqueFd pfd;
  {
    OwnedFdsLock lock;  // opened and its install noted as one step
    pfd.reset(FdInstalled(open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC)));
  }
  if (!pfd) return -errno;
  // fstat, not FdFileIdentity: the owner is needed, and the file is the one
  // this process's bind() made in its own socket directory (open(2) above
  // asked its filesystem already).
  struct stat st;
  if (fstat(pfd.get(), &st) != 0) return -errno;
  if (!S_ISSOCK(st.st_mode)) return -ENOTSOCK;
  if (st.st_uid != geteuid()) return -EPERM;
  char proc_path[64];
  snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", pfd.get());
  if (chmod(proc_path, static_cast<mode_t>(mode)) != 0) return -errno;
  *out = st;
  return 0;
}

// Removes the socket file at `path` after a failed listen, but only if it is
// still a socket (and, when `ours` is given, the very file we chmodded): a
// path that was swapped for a symlink or someone else's file is left alone.
void UnlinkOwnSocketFile(const char* path, const struct stat* ours) {
  if (ours != nullptr) {
    SockUnlinkFileIfSame(path, ours->st_dev, ours->st_ino);
    return;
  }
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
}

}  // namespace

int SockPair(int type, int out[2], bool own) {
  OwnedFdsLock lock;  // from before socketpair(2) until both ends are moved and registered, or their installs noted
  int made[2];
  if (socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, made) != 0) return -errno;  // installed: FdInstalledAll or FdOwnHigh below
  if (!own) {
    FdInstalledAll(made, 2);
    out[0] = made[0];
    out[1] = made[1];
    return 0;
  }
  UniqueFd second(made[1]);
  int r = FdOwnHigh(made[0]);
  if (r < 0) return r;  // the other end is closed by its owner
  UniqueFd first(r);
  r = FdOwnHigh(second.release());
  if (r < 0) return r;
  out[0] = first.release();
  out[1] = r;
  return 0;
}

int SockOpen(int type, bool own) { return NewSocket(type, own); }

int SockConnectTo(int fd, const struct sockaddr_un* addr, socklen_t addr_len) {
  int r;
  do {
    r = connect(fd, reinterpret_cast<const struct sockaddr*>(addr), addr_len);
  } while (r != 0 && errno == EINTR);
  if (r != 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  return 0;
}

int SockListen(int type, const char* name, size_t name_len, bool abstract, int mode, int backlog,
               bool pass_cred, bool own) {
  struct sockaddr_un addr;
  socklen_t addr_len;
  UniqueFd fd;
  int err = NewSocketFor(type, name, name_len, abstract, own, &addr, &addr_len, &fd);
  if (err != 0) return err;
  if (pass_cred && (err = SockSetPassCred(fd.get(), true)) != 0) return err;
  if (bind(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), addr_len) != 0) return -errno;
  struct stat ours;
  bool chmodded = false;
  if (!abstract && mode >= 0) {
    err = ChmodSocketFile(addr.sun_path, mode, &ours);
    chmodded = err == 0;
  }
  if (err == 0 && type != SOCK_DGRAM && listen(fd.get(), backlog) != 0) err = -errno;
  if (err != 0) {
    if (!abstract) UnlinkOwnSocketFile(addr.sun_path, chmodded ? &ours : nullptr);
    return err;
  }
  return fd.release();
}

int SockConnect(int type, const char* name, size_t name_len, bool abstract, bool own) {
  struct sockaddr_un addr;
  socklen_t addr_len;
  UniqueFd fd;
  int err = NewSocketFor(type, name, name_len, abstract, own, &addr, &addr_len, &fd);
  if (err != 0) return err;
  err = SockConnectTo(fd.get(), &addr, addr_len);
  if (err != 0) return err;
  return fd.release();
}

namespace {

int Accept(int listen_fd) {
  int fd;
  do {
    fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);  // installed: SockAccept's, under its lock
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  return fd;
}

}  // namespace

int SockAccept(int listen_fd) {
  // accept4 on a non-blocking listening socket returns at once, so the lock
  // is never held across a wait.
  OwnedFdsLock lock;
  if (!FdIsOwned(listen_fd)) return FdInstalled(Accept(listen_fd));
  return FdOwnHigh(Accept(listen_fd));
}

int SockListenAgain(int fd, int backlog, UniqueFds* queued) {
  if (listen(fd, backlog) != 0) return -errno;
  // Everything queued before listen() returned is in the queue now, in
  // order; a connection that arrives meanwhile may be taken too (it would
  // only be refused, and its client connects again).
  for (;;) {
    int r = SockAccept(fd);
    if (r == -EAGAIN) return 0;
    if (r < 0) return r;
    queued->push_back(UniqueFd(r));
  }
}

int SockPeerCred(int fd, pid_t* pid, uid_t* uid, gid_t* gid) {
  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -errno;
  *pid = cred.pid;
  *uid = cred.uid;
  *gid = cred.gid;
  return 0;
}

int SockPeerPidfd(int fd) {
  OwnedFdsLock lock;  // made and its install noted as one step
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) return -errno;  // installed: FdInstalled below
  return FdInstalled(pidfd);
}

int SockType(int fd) {
  int type = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return -errno;
  return type;
}

int SockSetPassRights(int fd, bool on) {
  int v = on ? 1 : 0;
  if (setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &v, sizeof(v)) != 0) return -errno;
  return 0;
}

int SockGetPassRights(int fd) {
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &v, &len) != 0) return -errno;
  return v != 0 ? 1 : 0;
}

int SockSetPassCred(int fd, bool on) {
  int v = on ? 1 : 0;
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &v, sizeof(v)) != 0) return -errno;
  return 0;
}

int SockSetPassPidfd(int fd, bool on) {
  int v = on ? 1 : 0;
  if (setsockopt(fd, SOL_SOCKET, SO_PASSPIDFD, &v, sizeof(v)) != 0) return -errno;
  return 0;
}

int SockMayReceiveControl(int fd) {
  static const int kOptions[] = {SO_PASSRIGHTS, SO_PASSCRED, SO_PASSPIDFD, SO_PASSSEC};
  for (int option : kOptions) {
    int v = 0;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, option, &v, &len) != 0) {
      if (errno != ENOPROTOOPT) return -errno;
      // An option the kernel does not know: SCM_RIGHTS always passes
      // (before 6.16); the others cannot be on.
      if (option == SO_PASSRIGHTS) return 1;
      continue;
    }
    if (v != 0) return 1;
  }
  return 0;
}

int SockSetReceiveTimeout(int fd, int64_t ms) {
  struct timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) return -errno;
  return 0;
}

int SockShutdown(int fd, int how) {
  if (shutdown(fd, how) != 0) return -errno;
  return 0;
}

int SockFileIdentity(const char* path, dev_t* dev, ino_t* ino) {
  struct stat st;
  if (lstat(path, &st) != 0) return -errno;
  if (!S_ISSOCK(st.st_mode)) return -ENOTSOCK;
  *dev = st.st_dev;
  *ino = st.st_ino;
  return 0;
}

int SockUnlinkFileIfSame(const char* path, dev_t dev, ino_t ino) {
  dev_t now_dev;
  ino_t now_ino;
  int r = SockFileIdentity(path, &now_dev, &now_ino);
  if (r == -ENOTSOCK) return -ESTALE;
  if (r != 0) return r;
  if (now_dev != dev || now_ino != ino) return -ESTALE;
  return unlink(path) == 0 ? 0 : -errno;
}

}  // namespace fdbridge
