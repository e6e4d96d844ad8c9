#include "sock_diag.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <vector>

#include "fd_ops.h"
#include "unique_fd.h"

namespace fdbridge {

namespace {

// udiag_vfs_dev is the superblock's s_dev as the kernel keeps it
// (net/unix/diag.c: sk_diag_dump_vfs), MKDEV(major, minor) =
// major << 20 | minor (include/linux/kdev_t.h, MINORBITS), not the encoding
// stat(2) gives userspace (new_encode_dev, the one glibc's makedev(3)
// follows): 254:0 is 0xfe00000 here and 0xfe00 in st_dev. Small numbers
// (major 0, minor < 256: tmpfs, overlayfs) look the same in both, which is
// why comparing the raw values seems to work on /tmp in a container.
constexpr unsigned kKernelMinorBits = 20;

dev_t FromKernelDev(uint32_t kdev) {
  return makedev(kdev >> kKernelMinorBits, kdev & ((1u << kKernelMinorBits) - 1));
}

// A dump part: netlink_recvmsg never keeps a dump message larger than 32 KiB
// (max_recvmsg_len), and MSG_TRUNC below says if one ever is.
constexpr size_t kRecvBytes = 64 * 1024;

constexpr uint32_t kSeq = 1;

// The UNIX_DIAG_VFS attribute of one dump message, if it has one.
bool VfsOf(const struct nlmsghdr* h, struct unix_diag_vfs* vfs) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg))) return false;
  const auto* msg = static_cast<const struct unix_diag_msg*>(NLMSG_DATA(h));
  int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*msg)));
  // The attributes follow the message, aligned (NLMSG_ALIGN: 20 bytes, so
  // they start right after it).
  const auto* attr = reinterpret_cast<const struct nlattr*>(
      reinterpret_cast<const char*>(msg) + NLMSG_ALIGN(sizeof(*msg)));
  while (len >= static_cast<int>(sizeof(*attr)) && attr->nla_len >= sizeof(*attr) &&
         attr->nla_len <= len) {
    if ((attr->nla_type & NLA_TYPE_MASK) == UNIX_DIAG_VFS &&
        attr->nla_len >= NLA_HDRLEN + sizeof(*vfs)) {
      memcpy(vfs, reinterpret_cast<const char*>(attr) + NLA_HDRLEN, sizeof(*vfs));
      return true;
    }
    int step = NLA_ALIGN(attr->nla_len);
    len -= step;
    attr = reinterpret_cast<const struct nlattr*>(reinterpret_cast<const char*>(attr) + step);
  }
  return false;
}

}  // namespace

int SockDiagFileBound(const dev_t* devs, size_t n, uint64_t ino) {
  UniqueFd nl;
  {
    OwnedFdsLock lock;  // made and its install noted as one step
    nl.reset(FdInstalled(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_SOCK_DIAG)));
  }
  if (!nl) return -errno;

  struct {
    struct nlmsghdr h;
    struct unix_diag_req r;
  } req;
  memset(&req, 0, sizeof(req));
  req.h.nlmsg_len = sizeof(req);
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = kSeq;
  req.r.sdiag_family = AF_UNIX;
  req.r.udiag_states = ~0u;  // every state: bound, listening, connected...
  req.r.udiag_show = UDIAG_SHOW_VFS;
  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof(kernel));
  kernel.nl_family = AF_NETLINK;  // nl_pid 0: the kernel
  ssize_t sent;
  do {
    sent = sendto(nl.get(), &req, sizeof(req), 0, reinterpret_cast<struct sockaddr*>(&kernel), sizeof(kernel));
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return -errno;

  const uint32_t ino32 = static_cast<uint32_t>(ino);
  std::vector<char> buf(kRecvBytes);
  for (;;) {
    struct sockaddr_nl from;
    socklen_t from_len = sizeof(from);
    ssize_t got;
    do {
      // Netlink carries no fds (no SCM_RIGHTS): nothing is installed here.
      got = recvfrom(nl.get(), buf.data(), buf.size(), MSG_TRUNC, reinterpret_cast<struct sockaddr*>(&from), &from_len);
    } while (got < 0 && errno == EINTR);
    if (got < 0) return -errno;
    if (static_cast<size_t>(got) > buf.size()) return -EMSGSIZE;
    // Only the kernel's answer counts (nl_pid 0); no other sender can reach
    // this socket without CAP_NET_ADMIN, but nothing is taken on trust.
    if (from_len < sizeof(from) || from.nl_pid != 0) continue;
    int len = static_cast<int>(got);
    for (auto* h = reinterpret_cast<struct nlmsghdr*>(buf.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != kSeq) continue;
      if (h->nlmsg_type == NLMSG_DONE) return 0;
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -EPROTO;
        int err = static_cast<const struct nlmsgerr*>(NLMSG_DATA(h))->error;
        return err < 0 ? err : -EPROTO;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
      struct unix_diag_vfs vfs;
      if (!VfsOf(h, &vfs) || vfs.udiag_vfs_ino != ino32) continue;
      dev_t dev = FromKernelDev(vfs.udiag_vfs_dev);
      for (size_t i = 0; i < n; i++) {
        if (devs[i] == dev) return 1;
      }
    }
    if (len != 0) return -EPROTO;  // a message cut short
  }
}

}  // namespace fdbridge
