// Which socket files have a socket bound to them, asked of the kernel
// (NETLINK_SOCK_DIAG, unix_diag(7)) rather than read from /proc/net/unix.
// Plain POSIX, no Node-API.
//
// /proc/net/unix prints each socket's name byte for byte, newlines too, so
// anyone who binds a socket (an abstract name, a path in a directory of
// theirs) can print a line that looks like another socket's record, for a
// path they do not hold. The dump answers with numbers: the inode each
// socket is bound to (UNIX_DIAG_VFS), which a name cannot forge, and which
// also recognises a socket bound through a relative path or a symlink.
#ifndef FDBRIDGE_SOCK_DIAG_H_
#define FDBRIDGE_SOCK_DIAG_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

namespace fdbridge {

// 1 when some AF_UNIX socket of this network namespace (the dump is per
// namespace, as /proc/net/unix is) is bound to a file whose device is one of
// `devs[0..n)` (as stat(2) gives st_dev) and whose inode number is `ino`;
// 0 when none is. -errno when the kernel does not answer: EPROTONOSUPPORT
// or EAFNOSUPPORT (no NETLINK_SOCK_DIAG: CONFIG_SOCK_DIAG off, a sandbox
// such as gVisor), ENOENT (no unix_diag: CONFIG_UNIX_DIAG off and no module
// to load), EACCES or EPERM (a seccomp filter or an LSM), EMSGSIZE or EPROTO
// (an answer that does not parse), EAGAIN (a dump part that was not there
// when asked: the kernel makes each one within the recv before).
//
// The kernel reports an inode number cut to 32 bits, so the low 32 bits of
// `ino` are compared: on a filesystem with wider inode numbers two files
// can match, which makes a stale file look bound (kept), never the reverse.
int SockDiagFileBound(const dev_t* devs, size_t n, uint64_t ino);

}  // namespace fdbridge

#endif  // FDBRIDGE_SOCK_DIAG_H_
