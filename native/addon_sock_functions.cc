// The plain functions over sockets (sock_ops.h, scm_rights.h) seen from JS:
// socketpair, listen, connect, peer credentials, socket options, one-shot
// sendmsg/recvmsg.
#include "addon.h"

#include <sys/socket.h>

#include <memory>
#include <string>
#include <vector>

#include "fd_ops.h"
#include "scm_rights.h"
#include "sock_diag.h"
#include "sock_ops.h"
#include "unique_fd.h"

namespace fdbridge {

namespace {

// Every fd made here for JavaScript is kept by the environment until the
// library claims it (KeepForJs in addon.h); one made with `own` is
// registered, and held for the environment that way.
Napi::Value KeptFd(Napi::Env env, int r, bool own, const char* syscall) {
  CheckFdResult(env, r, syscall);
  if (!own) KeepForJs(env, &r, 1);
  return Napi::Number::New(env, r);
}

// socketpair(type, own?): `own` numbers both ends above the fd floor and
// registers them as fdbridge's (see sock_ops.h).
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  int type = ArgSockType(info, 0);
  bool own = info.Length() > 1 && info[1].ToBoolean();
  int sv[2];
  CheckFdResult(info.Env(), SockPair(type, sv, own), "socketpair");
  if (!own) KeepForJs(info.Env(), sv, 2);
  return FdArray(info.Env(), sv, 2);
}

// listen(type, name, abstract, mode, backlog, passCred?, own?)
Napi::Value Listen(const Napi::CallbackInfo& info) {
  int type = ArgSockType(info, 0);
  std::string name = ArgSockName(info, 1);
  bool abstract = info.Length() > 2 && info[2].ToBoolean();
  int mode = ArgInt(info, 3, "mode");
  int backlog = ArgInt(info, 4, "backlog");
  bool pass_cred = info.Length() > 5 && info[5].ToBoolean();
  bool own = info.Length() > 6 && info[6].ToBoolean();
  int fd = SockListen(type, name.data(), name.size(), abstract, mode, backlog, pass_cred, own);
  return KeptFd(info.Env(), fd, own, "bind");
}

// listenAgain(fd, backlog) -> the connections that were queued before (see
// SockListenAgain), the caller's to close; throws (none kept) on failure.
Napi::Value ListenAgain(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int backlog = ArgInt(info, 1, "backlog");
  UniqueFds queued;
  int r = SockListenAgain(fd, backlog, &queued);
  if (r < 0) {
    // Those taken before the failure may hold what their clients queued:
    // closed as connections nobody takes (ScmCloseConnection), never as they are here.
    int type = SockType(fd);
    std::vector<uint64_t> tickets;
    for (int c : queued.release()) ScmCloseConnection(c, type, FdIsOwned(c), /*oob_inline=*/false, 0, &tickets);
    ThrowSystem(info.Env(), r, "listen");
  }
  Napi::Array arr = FdArray(info.Env(), queued.data(), queued.size());
  // Accepted on a listening socket of ours, they are registered; else kept.
  if (!FdIsOwned(fd)) KeepForJs(info.Env(), queued.data(), queued.size());
  queued.release();  // JavaScript's now
  return arr;
}

// dgramSocket(own?) -> an unbound DGRAM socket (non-blocking, close-on-exec).
Napi::Value DgramSocket(const Napi::CallbackInfo& info) {
  bool own = info.Length() > 0 && info[0].ToBoolean();
  return KeptFd(info.Env(), SockOpen(SOCK_DGRAM, own), own, "socket");
}

// connect(type, name, abstract, own?)
Napi::Value Connect(const Napi::CallbackInfo& info) {
  int type = ArgSockType(info, 0);
  std::string name = ArgSockName(info, 1);
  bool abstract = info.Length() > 2 && info[2].ToBoolean();
  bool own = info.Length() > 3 && info[3].ToBoolean();
  int fd = SockConnect(type, name.data(), name.size(), abstract, own);
  return KeptFd(info.Env(), fd, own, "connect");
}

Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid;
  uid_t uid;
  gid_t gid;
  CheckFdResult(env, SockPeerCred(ArgFd(info, 0), &pid, &uid, &gid), "getsockopt(SO_PEERCRED)");
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, pid));
  o.Set("uid", Napi::Number::New(env, uid));
  o.Set("gid", Napi::Number::New(env, gid));
  return o;
}

// peerPidfd(fd, own?), pidfdOpen(pid, own?): `own` as for socketpair.
Napi::Value PeerPidfd(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool own = info.Length() > 1 && info[1].ToBoolean();
  int r;
  if (own) {
    OwnedFdsLock lock;  // made and registered as one step
    r = FdOwnHigh(SockPeerPidfd(fd));
  } else {
    r = SockPeerPidfd(fd);
  }
  return KeptFd(info.Env(), r, own, "getsockopt(SO_PEERPIDFD)");
}

Napi::Value SocketType(const Napi::CallbackInfo& info) {
  int r = SockType(ArgFd(info, 0));
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), r, "getsockopt(SO_TYPE)"));
}

// socketShape(fd) -> { unix, type, listening }: SO_DOMAIN (AF_UNIX?), SO_TYPE and
// SO_ACCEPTCONN, for checking an fd handed in as a listening socket.
Napi::Value SocketShape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  auto get = [&](int option, const char* syscall) {
    int value = 0;
    socklen_t len = sizeof(value);
    CheckFdResult(env, getsockopt(fd, SOL_SOCKET, option, &value, &len) == 0 ? 0 : -errno, syscall);
    return value;
  };
  Napi::Object out = Napi::Object::New(env);
  out.Set("unix", Napi::Boolean::New(env, get(SO_DOMAIN, "getsockopt(SO_DOMAIN)") == AF_UNIX));
  out.Set("type", Napi::Number::New(env, get(SO_TYPE, "getsockopt(SO_TYPE)")));
  out.Set("listening", Napi::Boolean::New(env, get(SO_ACCEPTCONN, "getsockopt(SO_ACCEPTCONN)") != 0));
  return out;
}

Napi::Value SetPassRights(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), SockSetPassRights(ArgFd(info, 0), info[1].ToBoolean()), "setsockopt(SO_PASSRIGHTS)");
  return info.Env().Undefined();
}

Napi::Value GetPassRights(const Napi::CallbackInfo& info) {
  int r = SockGetPassRights(ArgFd(info, 0));
  return Napi::Boolean::New(info.Env(), CheckFdResult(info.Env(), r, "getsockopt(SO_PASSRIGHTS)") != 0);
}

Napi::Value SetPassCred(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), SockSetPassCred(ArgFd(info, 0), info[1].ToBoolean()), "setsockopt(SO_PASSCRED)");
  return info.Env().Undefined();
}

Napi::Value SetPassPidfd(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), SockSetPassPidfd(ArgFd(info, 0), info[1].ToBoolean()), "setsockopt(SO_PASSPIDFD)");
  return info.Env().Undefined();
}

Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), SockShutdown(ArgFd(info, 0), ArgInt(info, 1, "how")), "shutdown");
  return info.Env().Undefined();
}

// sendNow(fd, data, fds?) -> bytes sent. One non-blocking sendmsg, for tests
// and for peers that must send exactly what they are told (EAGAIN throws).
Napi::Value SendNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  const char* data;
  size_t len;
  ArgBytes(info, 1, &data, &len);
  std::vector<int> fds;
  ArgFdList(info, 2, &fds);
  ssize_t n = ScmSend(fd, data, len, fds.data(), fds.size());
  if (n < 0) ThrowSystem(env, static_cast<int>(n), "sendmsg");
  return Napi::Number::New(env, static_cast<double>(n));
}

// recvNow(fd, bufferSize, maxFds) -> { data, fds } | null (nothing to read).
// One non-blocking recvmsg; EOF and truncation throw typed errors. It
// receives with room for kMaxFdsPerMessage fds whatever maxFds is, so that
// the kernel drops none inside recvmsg, and the fds of a message refused
// (truncated, more than maxFds) go to the background closer, as a
// UnixSocket's do: a peer's lingering TCP socket among them would hold this
// thread in its close for the linger time the peer chose.
Napi::Value RecvNow(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  int size = ArgInt(info, 1, "bufferSize");
  int max_fds = ArgInt(info, 2, "maxFds");
  if (size < 1 || size > 64 * 1024 * 1024) throw Napi::RangeError::New(env, "bufferSize must be between 1 and 64 MiB");
  if (max_fds < 0 || max_fds > static_cast<int>(kMaxFdsPerMessage)) {
    throw Napi::RangeError::New(env, "maxFds must be between 0 and 253");
  }
  int type = CheckFdResult(env, SockType(fd), "getsockopt(SO_TYPE)");
  std::vector<char> buf(static_cast<size_t>(size));
  size_t control_len = ScmControlSpace(kMaxFdsPerMessage);
  std::unique_ptr<char[]> control(new char[control_len]);
  std::vector<int> fds(kMaxFdsPerMessage);
  RecvResult r;
  ScmRecv(fd, type, buf.data(), buf.size(), control.get(), control_len, fds.data(),
          static_cast<size_t>(max_fds), &r, nullptr, /*own=*/false, ScmDiscard{true, 0});
  if (r.status == RecvStatus::kWouldBlock) return env.Null();
  if (r.status != RecvStatus::kMessage) throw Napi::Error(env, ReceiveError(env, r, "recvmsg"));
  KeepForJs(env, fds.data(), r.nfds);
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", Napi::Buffer<char>::Copy(env, buf.data(), r.bytes));
  o.Set("fds", FdArray(env, fds.data(), r.nfds));
  o.Set("otherControlMessages", Napi::Number::New(env, static_cast<double>(r.other_cmsgs)));
  return o;
}

// closeConnection(fd, owner = 0) -> the tickets of its background closes:
// `fd`, a connection (not listening) that nobody takes, whose receive queue
// may hold fds a peer sent, is closed as ScmCloseConnection closes it, as
// `owner`'s (see closeInBackground). The fd is no longer the caller's,
// unless this throws (not a socket: nothing done).
Napi::Value CloseConnection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  double owner = info.Length() > 1 && !info[1].IsUndefined() ? WholeNumber(info[1]) : 0;
  if (owner < 0) throw Napi::TypeError::New(env, "closeConnection: owner must be a non-negative integer");
  int type = CheckFdResult(env, SockType(fd), "getsockopt(SO_TYPE)");
  ClaimFromJs(env, &fd, 1);
  std::vector<uint64_t> tickets;
  ScmCloseConnection(fd, type, FdIsOwned(fd), /*oob_inline=*/false, static_cast<uint64_t>(owner), &tickets);
  return TicketArray(env, tickets);
}

// unixFileBound(devs, ino32) -> whether an AF_UNIX socket of this network
// namespace is bound to the file of device one of `devs` (st_dev numbers)
// and inode number `ino32` (its low 32 bits: what the kernel reports); a
// SystemError (syscall "sock_diag") when the kernel does not answer (see
// SockDiagFileBound).
Napi::Value UnixFileBound(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "unixFileBound(devs, ino32): devs must be an array of device numbers and ino32 an integer below 2^32";
  if (info.Length() < 2 || !info[0].IsArray()) throw Napi::TypeError::New(env, usage);
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<dev_t> devs(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    double d = WholeNumber(arr.Get(i));
    if (d < 0) throw Napi::TypeError::New(env, usage);
    devs[i] = static_cast<dev_t>(d);
  }
  double ino = WholeNumber(info[1]);
  if (ino < 0 || ino > 4294967295.0) throw Napi::TypeError::New(env, usage);
  int r = SockDiagFileBound(devs.data(), devs.size(), static_cast<uint64_t>(ino));
  if (r < 0) ThrowSystem(env, r, "sock_diag");
  return Napi::Boolean::New(env, r == 1);
}

}  // namespace

void ExportSockFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("socketpair", Napi::Function::New<SocketPair>(env, "socketpair"));
  exports.Set("listen", Napi::Function::New<Listen>(env, "listen"));
  exports.Set("listenAgain", Napi::Function::New<ListenAgain>(env, "listenAgain"));
  exports.Set("connect", Napi::Function::New<Connect>(env, "connect"));
  exports.Set("dgramSocket", Napi::Function::New<DgramSocket>(env, "dgramSocket"));
  exports.Set("peerCred", Napi::Function::New<PeerCred>(env, "peerCred"));
  exports.Set("peerPidfd", Napi::Function::New<PeerPidfd>(env, "peerPidfd"));
  exports.Set("socketType", Napi::Function::New<SocketType>(env, "socketType"));
  exports.Set("socketShape", Napi::Function::New<SocketShape>(env, "socketShape"));
  exports.Set("setPassRights", Napi::Function::New<SetPassRights>(env, "setPassRights"));
  exports.Set("getPassRights", Napi::Function::New<GetPassRights>(env, "getPassRights"));
  exports.Set("setPassCred", Napi::Function::New<SetPassCred>(env, "setPassCred"));
  exports.Set("setPassPidfd", Napi::Function::New<SetPassPidfd>(env, "setPassPidfd"));
  exports.Set("shutdown", Napi::Function::New<Shutdown>(env, "shutdown"));
  exports.Set("closeConnection", Napi::Function::New<CloseConnection>(env, "closeConnection"));
  exports.Set("sendNow", Napi::Function::New<SendNow>(env, "sendNow"));
  exports.Set("recvNow", Napi::Function::New<RecvNow>(env, "recvNow"));
  exports.Set("unixFileBound", Napi::Function::New<UnixFileBound>(env, "unixFileBound"));
}

}  // namespace fdbridge
