// The plain functions over fds (fd_ops.h) seen from JS: dup, close, identity,
// flags, the fd registry, limits, pipes, pidfds.
#include "addon.h"

#include <fcntl.h>
#include <sys/resource.h>

#include <algorithm>
#include <string>
#include <vector>

#include "fd_hold.h"
#include "fd_ops.h"

namespace fdbridge {

namespace {

// pollReadable(fds) -> booleans: readable (or hung up) now, without waiting.
Napi::Value PollReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "pollReadable(fds): fds must be an array");
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<int> fds;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d == floor(d)) || d < 0 || d > 2147483647.0) throw Napi::TypeError::New(env, "each fd must be a non-negative integer");
    fds.push_back(static_cast<int>(d));
  }
  std::vector<bool> ready;
  CheckFdResult(env, FdPollReadable(fds.data(), fds.size(), &ready), "poll");
  Napi::Array out = Napi::Array::New(env, ready.size());
  for (size_t i = 0; i < ready.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::Boolean::New(env, ready[i]));
  return out;
}

// An fd made here for JavaScript (not registered): kept by the environment
// until the library claims it (KeepForJs in addon.h).
Napi::Value KeptFd(Napi::Env env, int r, const char* syscall) {
  CheckFdResult(env, r, syscall);
  KeepForJs(env, &r, 1);
  return Napi::Number::New(env, r);
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  return KeptFd(info.Env(), FdDupCloexec(ArgFd(info, 0)), "dup");
}

// The optional `givenTo` argument at `index` of dupHigh and dupAll: the
// closer owner of the ledger the copies are given to (FdDupAllGiven), or 0.
uint64_t ArgGivenTo(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || info[index].IsUndefined()) return 0;
  double owner = WholeNumber(info[index]);
  if (owner <= 0) throw Napi::TypeError::New(info.Env(), "givenTo must be a positive integer (a closer owner)");
  return static_cast<uint64_t>(owner);
}

// dupHigh(fd, givenTo?) -> a close-on-exec duplicate for fdbridge itself,
// numbered at or above the floor (FdDupHigh); with `givenTo`, a copy given
// to a command whose ledger (that closer owner's) closes it
// (FdDupAllGiven). A number fdbridge holds for itself is refused as closed
// (EBADF, FdDupCallersFds): see OwnedFdsLock in fd_ops.h.
Napi::Value DupHigh(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  uint64_t given_to = ArgGivenTo(info, 1);
  int out = -1;
  int r = FdDupCallersFds(&fd, 1, 0, given_to, &out);
  if (r == 0) r = out;
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), r, "dup"));
}

// The list of fds to give that dupAll and firstNotGivable take (argument
// 0): an array of numbers or an Int32Array of them (Int32ListArg, copied
// before checked), each a non-negative integer an int holds, else a
// TypeError naming `fn`. Any length: a batch's pieces are split above.
std::vector<int> ArgFdsToGive(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  const int32_t* numbers = nullptr;
  size_t count = 0;
  bool typed = info.Length() >= 1 && Int32ListArg(info[0], &numbers, &count);
  if (!typed && (info.Length() < 1 || !info[0].IsArray())) throw Napi::TypeError::New(env, std::string(fn) + "(fds): fds must be an array");
  Napi::Array arr = typed ? Napi::Array() : info[0].As<Napi::Array>();
  size_t n = typed ? count : arr.Length();
  std::vector<int> fds(n);
  if (typed) fds.assign(numbers, numbers + n);
  for (size_t i = 0; i < n; i++) {
    if (!typed) {
      Napi::Value v = arr.Get(static_cast<uint32_t>(i));
      double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      fds[i] = d == floor(d) && d >= 0 && d <= 2147483647.0 ? static_cast<int>(d) : -1;
    }
    if (fds[i] < 0) throw Napi::TypeError::New(env, "each fd must be a non-negative integer");
  }
  return fds;
}

// dupAll(fds, above = 0, givenTo?) -> duplicates (close-on-exec) for
// fdbridge itself, all or none, numbered at or above the floor, above the
// highest fd in the list and at least `above` (the caller passes the
// highest of a whole batch sent in several pieces): none can take the
// number of a closed fd later in the list or batch and make that entry
// "succeed" on the wrong file. `givenTo`: as dupHigh's.
Napi::Value DupAll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int> fds = ArgFdsToGive(info, "dupAll");
  int highest = -1;
  if (info.Length() > 1 && !info[1].IsUndefined()) highest = ArgFd(info, 1) - 1;
  for (int fd : fds) highest = std::max(highest, fd);
  uint64_t given_to = ArgGivenTo(info, 2);
  std::vector<int> out(fds.size());
  int r = FdDupCallersFds(fds.data(), fds.size(), FdAbove(highest), given_to, out.data());
  CheckFdResult(env, r, "dup");
  return FdArray(env, out.data(), fds.size());
}

// firstNotGivable(fds) -> the index of the first entry a duplication of
// the list would refuse (dupAll: EBADF), or -1: not open (fcntl F_GETFD) or
// a number fdbridge holds for itself (FdRefuseOwned), checked under one
// OwnedFdsLock. Nothing is made or closed: closing a copy would drop this
// process's POSIX record locks on the entry's file.
Napi::Value FirstNotGivable(const Napi::CallbackInfo& info) {
  std::vector<int> fds = ArgFdsToGive(info, "firstNotGivable");
  OwnedFdsLock lock;
  for (size_t i = 0; i < fds.size(); i++) {
    if (fcntl(fds[i], F_GETFD) < 0 || FdRefuseOwned(&fds[i], 1) != 0) return Napi::Number::New(info.Env(), static_cast<double>(i));
  }
  return Napi::Number::New(info.Env(), -1);
}

// disown(fd[, registration]): with a registration (registration(fd)), only
// that one leaves the registry (FdDisownRegistration).
Napi::Value Disown(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  if (info.Length() < 2 || info[1].IsUndefined()) {
    FdDisown(fd);
    return info.Env().Undefined();
  }
  double registration = WholeNumber(info[1]);
  if (registration < 0) throw Napi::TypeError::New(info.Env(), "disown(fd, registration): registration must be a non-negative integer");
  FdDisownRegistration(fd, static_cast<uint64_t>(registration));
  return info.Env().Undefined();
}

// disownGiven(fd, owner) -> false when `fd` is not a copy given under that
// closer owner (dupHigh's givenTo) still at its number; else it is the
// command's now (FdDisownGiven), and the answer is the file the copy was
// made with, { dev, ino } (BigInts), for closeClientFds to expect there,
// or true when that file is not known.
Napi::Value DisownGiven(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint64_t owner = ArgGivenTo(info, 1);
  std::optional<FdIdentity> file;
  if (owner == 0 || !FdDisownGiven(fd, owner, &file)) return Napi::Boolean::New(env, false);
  if (!file.has_value()) return Napi::Boolean::New(env, true);
  Napi::Object o = Napi::Object::New(env);
  o.Set("dev", Napi::BigInt::New(env, file->dev));
  o.Set("ino", Napi::BigInt::New(env, file->ino));
  return o;
}

Napi::Value Registration(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdRegistration(ArgFd(info, 0))));
}

// watchClosedByOthers(on): a leak check starts or stops watching for fds of
// ours someone else closed (FdWatchClosedByOthers). Counted for this
// environment too, whose teardown ends the watches still running; a stop
// with none of this environment's running ends no other's.
Napi::Value WatchClosedByOthers(const Napi::CallbackInfo& info) {
  InstanceData* data = Data(info.Env());
  if (info.Length() > 0 && info[0].ToBoolean().Value()) {
    data->closed_by_others_watches++;
    FdWatchClosedByOthers(true);
  } else if (data->closed_by_others_watches > 0) {
    data->closed_by_others_watches--;
    FdWatchClosedByOthers(false);
  }
  return info.Env().Undefined();
}

// closedByOther(registration): whether that registration ended with fdbridge
// finding its fd closed by someone else, while a check watched.
Napi::Value ClosedByOther(const Napi::CallbackInfo& info) {
  double registration = info.Length() > 0 ? WholeNumber(info[0]) : -1;
  if (registration < 0) throw Napi::TypeError::New(info.Env(), "closedByOther(registration): registration must be a non-negative integer");
  return Napi::Boolean::New(info.Env(), FdWasClosedByOther(static_cast<uint64_t>(registration)));
}

// foundClosedByOther(fd, registration): fdbridge found `fd`, held under
// `registration`, closed or holding another file where something of its
// own (a libuv stream) is about to close it: that registration ends,
// noted as closed by someone else while a check watches (FdClosedByOther).
Napi::Value FoundClosedByOther(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  double registration = info.Length() > 1 ? WholeNumber(info[1]) : -1;
  if (registration < 0) throw Napi::TypeError::New(info.Env(), "foundClosedByOther(fd, registration): registration must be a non-negative integer");
  FdClosedByOther(fd, static_cast<uint64_t>(registration));
  return info.Env().Undefined();
}

// own(fd): registers an fd fdbridge took over without making it, at the
// number it has (see NativeBinding.own).
Napi::Value Own(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  FdMarkOwned(&fd, 1);
  ClaimFromJs(info.Env(), &fd, 1);
  return info.Env().Undefined();
}

// installGenerations(fds) -> each number's install generation now
// (FdInstallGenerations: 0 for none), numbers, read in one hold of the
// registry's lock.
Napi::Value InstallGenerations(const Napi::CallbackInfo& info) {
  std::vector<int> fds = ArgFdArray(info, "installGenerations(fds): fds must be an array");
  std::vector<uint64_t> installs(fds.size());
  FdInstallGenerations(fds.data(), fds.size(), installs.data());
  return TicketArray(info.Env(), installs);
}

// posixLock(fd, type): F_SETLK of the whole file, type 'read', 'write' or 'unlock' (for tests).
Napi::Value PosixLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  std::string type = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  int t = type == "read" ? F_RDLCK : type == "write" ? F_WRLCK : type == "unlock" ? F_UNLCK : -1;
  if (t < 0) throw Napi::TypeError::New(env, "posixLock(fd, type): type must be 'read', 'write' or 'unlock'");
  CheckFdResult(env, FdPosixLock(fd, t), "fcntl");
  return env.Undefined();
}

// conflictingLock(fd) -> 'read' | 'write' | 'none': a lock that a write OFD lock through fd would meet (for tests).
Napi::Value ConflictingLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int r = CheckFdResult(env, FdConflictingLock(ArgFd(info, 0)), "fcntl");
  return Napi::String::New(env, r == F_RDLCK ? "read" : r == F_WRLCK ? "write" : "none");
}

Napi::Value OwnedFdCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdOwnedCount()));
}

Napi::Value FdFloorFn(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), FdFloor());
}

// newReceiptTag() -> a receipt tag never given before (FdNewReceiptTag).
Napi::Value NewReceiptTag(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdNewReceiptTag()));
}

// claimReceipts(fds, tag) -> each number's install generation where its
// install is `tag`'s receipt not claimed yet (claimed now), 0 elsewhere
// (FdClaimReceipts), numbers.
Napi::Value ClaimReceipts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int> fds = ArgFdArray(info, "claimReceipts(fds, tag): fds must be an array");
  double tag = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0;
  uint64_t receipt_tag = tag >= 1 && tag <= 9007199254740991.0 ? static_cast<uint64_t>(tag) : 0;
  std::vector<uint64_t> installs(fds.size());
  FdClaimReceipts(fds.data(), fds.size(), receipt_tag, installs.data());
  return TicketArray(env, installs);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  ClaimFromJs(info.Env(), &fd, 1);
  CheckFdResult(info.Env(), FdClose(fd), "close");
  return info.Env().Undefined();
}

// handOver(fds): the library hands these numbers on (to its caller, or to
// another thread): the environment no longer keeps them (KeepForJs).
Napi::Value HandOver(const Napi::CallbackInfo& info) {
  InstanceData* data = Data(info.Env());
  // On every message with fds: nothing to read when nothing is kept.
  if (data != nullptr && data->unclaimed.empty()) return info.Env().Undefined();
  std::vector<int> fds = ArgFdArray(info, "handOver(fds): fds must be an array");
  ClaimFromJs(info.Env(), fds.data(), fds.size());
  return info.Env().Undefined();
}

// unclaimedFds() -> the numbers this environment keeps for its JavaScript
// now (KeepForJs), for tests.
Napi::Value UnclaimedFds(const Napi::CallbackInfo& info) {
  InstanceData* data = Data(info.Env());
  std::vector<int> fds;
  if (data != nullptr) fds.assign(data->unclaimed.begin(), data->unclaimed.end());
  std::sort(fds.begin(), fds.end());
  return FdArray(info.Env(), fds.data(), fds.size());
}

Napi::Value Identity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FdIdentity id;
  CheckFdResult(env, FdFileIdentity(ArgFd(info, 0), &id), "statx");
  Napi::Object o = Napi::Object::New(env);
  o.Set("dev", Napi::BigInt::New(env, id.dev));
  o.Set("ino", Napi::BigInt::New(env, id.ino));
  o.Set("mode", Napi::Number::New(env, id.mode));
  return o;
}

Napi::Value GetFlags(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), FdGetFlags(ArgFd(info, 0)), "fcntl"));
}

Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), FdSetCloexec(ArgFd(info, 0), info[1].ToBoolean()), "fcntl");
  return info.Env().Undefined();
}

Napi::Value SetNonblock(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), FdSetNonblock(ArgFd(info, 0), info[1].ToBoolean()), "fcntl");
  return info.Env().Undefined();
}

Napi::Value ListFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = info.Length() > 0 && info[0].IsNumber() ? ArgInt(info, 0, "pid") : 0;
  bool files = info.Length() > 1 && info[1].ToBoolean();
  std::vector<FdEntry> entries;
  CheckFdResult(env, FdList(pid, &entries, files), "opendir");
  Napi::Array out = Napi::Array::New(env, entries.size());
  for (size_t i = 0; i < entries.size(); i++) {
    Napi::Array row = Napi::Array::New(env, files ? 3 : 2);
    row.Set(0u, Napi::Number::New(env, entries[i].fd));
    row.Set(1u, Napi::String::New(env, entries[i].target));
    if (files) row.Set(2u, Napi::String::New(env, entries[i].file));
    out.Set(static_cast<uint32_t>(i), row);
  }
  return out;
}

// holdFiles(pid, fds) -> { id, tid, held } (FdHoldFiles), made for this
// environment; pid 0: this process.
Napi::Value HoldFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = ArgInt(info, 0, "pid");
  if (info.Length() < 2 || !info[1].IsArray()) throw Napi::TypeError::New(env, "holdFiles(pid, fds): fds must be an array");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<int> fds;
  fds.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    double d = WholeNumber(arr.Get(i));
    if (d < 0 || d > 2147483647.0) throw Napi::TypeError::New(env, "each fd must be a non-negative integer");
    fds.push_back(static_cast<int>(d));
  }
  FdHold hold;
  std::vector<std::string> held;
  CheckFdResult(env, FdHoldFiles(pid, fds.data(), fds.size(), Data(env)->holder, &hold, &held), "hold");
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", Napi::BigInt::New(env, hold.id));
  out.Set("tid", Napi::Number::New(env, hold.tid));
  Napi::Array files = Napi::Array::New(env, held.size());
  for (size_t i = 0; i < held.size(); i++) files.Set(static_cast<uint32_t>(i), Napi::String::New(env, held[i]));
  out.Set("held", files);
  return out;
}

// liveHolds() -> how many holds this process has made and not released (for tests).
Napi::Value LiveHolds(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdLiveHoldCount()));
}

// releaseHold(hold) -> true when released, false when there was no such hold (released already).
Napi::Value ReleaseHold(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "hold must be an object");
  Napi::Value id = info[0].As<Napi::Object>().Get("id");
  if (!id.IsBigInt()) throw Napi::TypeError::New(env, "hold must be what holdFiles returned");
  bool lossless;
  FdHold hold;
  hold.id = id.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw Napi::TypeError::New(env, "hold must be what holdFiles returned");
  return Napi::Boolean::New(env, FdReleaseHold(hold) == 0);
}

Napi::Value LimitValue(Napi::Env env, uint64_t v) {
  if (v == static_cast<uint64_t>(RLIM_INFINITY)) return Napi::Number::New(env, INFINITY);
  return Napi::Number::New(env, static_cast<double>(v));
}

uint64_t ArgLimit(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "limit must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (v == INFINITY) return static_cast<uint64_t>(RLIM_INFINITY);
  if (!(v >= 0) || v != floor(v)) throw Napi::RangeError::New(info.Env(), "limit must be a non-negative integer");
  return static_cast<uint64_t>(v);
}

Napi::Value GetFdLimit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t soft, hard;
  CheckFdResult(env, FdGetLimit(&soft, &hard), "getrlimit");
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, LimitValue(env, soft));
  out.Set(1u, LimitValue(env, hard));
  return out;
}

Napi::Value SetFdLimit(const Napi::CallbackInfo& info) {
  CheckFdResult(info.Env(), FdSetLimit(ArgLimit(info, 0), ArgLimit(info, 1)), "setrlimit");
  return info.Env().Undefined();
}

Napi::Value Pipe(const Napi::CallbackInfo& info) {
  int fds[2];
  CheckFdResult(info.Env(), FdPipe(fds), "pipe2");
  KeepForJs(info.Env(), fds, 2);
  return FdArray(info.Env(), fds, 2);
}

Napi::Value Memfd(const Napi::CallbackInfo& info) {
  std::string name = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "fdbridge";
  return KeptFd(info.Env(), FdMemfd(name.c_str()), "memfd_create");
}

Napi::Value Eventfd(const Napi::CallbackInfo& info) {
  return KeptFd(info.Env(), FdEventfd(), "eventfd");
}

Napi::Value PidfdOpenFn(const Napi::CallbackInfo& info) {
  int pid = ArgInt(info, 0, "pid");
  bool own = info.Length() > 1 && info[1].ToBoolean();
  int r;
  if (own) {
    OwnedFdsLock lock;  // made and registered as one step
    r = FdOwnHigh(PidfdOpen(pid));
    return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), r, "pidfd_open"));
  }
  return KeptFd(info.Env(), PidfdOpen(pid), "pidfd_open");
}

// runtimeCloses(fd) -> registration: `fd`, ours, is a libuv stream's to
// close from now on (fd_ops.h, FdRuntimeCloses).
Napi::Value RuntimeCloses(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdRuntimeCloses(ArgFd(info, 0))));
}

// runtimeClosing(fd, registration): that stream's close begins (fd_ops.h,
// FdRuntimeClosing).
Napi::Value RuntimeClosing(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  double registration = info.Length() > 1 ? WholeNumber(info[1]) : -1;
  if (registration < 0) throw Napi::TypeError::New(info.Env(), "runtimeClosing(fd, registration): registration must be a non-negative integer");
  FdRuntimeClosing(fd, static_cast<uint64_t>(registration));
  return info.Env().Undefined();
}

Napi::Value PidfdGetfdFn(const Napi::CallbackInfo& info) {
  int r = PidfdGetfdHigh(ArgFd(info, 0), ArgFd(info, 1));
  return Napi::Number::New(info.Env(), CheckFdResult(info.Env(), r, "pidfd_getfd"));
}

// pidfdGetfdAll(pidfd, fds, files?): pidfdGetfd for each, all or none, in
// one call. `files`: the file each must be, { dev, ino } (BigInts), as many
// as fds; a pull that is another file fails the call (kind 'swappedpin':
// EBADF naming that fd and its index), nothing pulled kept.
Napi::Value PidfdGetfdAllFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pidfd = ArgFd(info, 0);
  std::vector<int> targets;
  ArgFdList(info, 1, &targets);
  std::vector<FdIdentity> files;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    const char* usage = "pidfdGetfdAll(pidfd, fds, files): files must be an array as long as fds of { dev, ino } (BigInts)";
    if (!info[2].IsArray() || info[2].As<Napi::Array>().Length() != targets.size()) throw Napi::TypeError::New(env, usage);
    Napi::Array arr = info[2].As<Napi::Array>();
    files.resize(targets.size());
    for (uint32_t i = 0; i < targets.size(); i++) {
      Napi::Value e = arr.Get(i);
      if (!e.IsObject()) throw Napi::TypeError::New(env, usage);
      Napi::Value dev = e.As<Napi::Object>().Get("dev");
      Napi::Value ino = e.As<Napi::Object>().Get("ino");
      if (!dev.IsBigInt() || !ino.IsBigInt()) throw Napi::TypeError::New(env, usage);
      bool dev_lossless = true;
      bool ino_lossless = true;
      files[i] = {dev.As<Napi::BigInt>().Uint64Value(&dev_lossless), ino.As<Napi::BigInt>().Uint64Value(&ino_lossless), 0};
      if (!dev_lossless || !ino_lossless) throw Napi::TypeError::New(env, usage);
    }
  }
  std::vector<int> out(targets.size());
  size_t swapped = targets.size();
  int r = PidfdGetfdAllHigh(pidfd, targets.data(), targets.size(), out.data(), files.empty() ? nullptr : files.data(), &swapped);
  if (r < 0 && swapped < targets.size()) {
    Napi::Object details = Napi::Object::New(env);
    details.Set("fd", Napi::Number::New(env, targets[swapped]));
    details.Set("index", Napi::Number::New(env, static_cast<double>(swapped)));
    throw Napi::Error(env, MakeError(env, "swappedpin", r, "pidfd_getfd", details));
  }
  CheckFdResult(env, r, "pidfd_getfd");
  return FdArray(env, out.data(), out.size());
}

// The numbers of a close list (closeAll's, closeCallers'): an Int32Array
// or array of them as it is, or an array whose entries that are not fd
// numbers are passed over; claimed from this environment (ClaimFromJs).
std::vector<int> CloseListArg(const Napi::CallbackInfo& info, const char* usage) {
  Napi::Env env = info.Env();
  const int32_t* numbers = nullptr;
  size_t count = 0;
  std::vector<int> fds;
  if (info.Length() >= 1 && Int32ListArg(info[0], &numbers, &count)) {
    fds.assign(numbers, numbers + count);
    fds.erase(std::remove_if(fds.begin(), fds.end(), [](int fd) { return fd < 0; }), fds.end());
  } else {
    if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, usage);
    Napi::Array arr = info[0].As<Napi::Array>();
    fds.reserve(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
      double d = WholeNumber(arr.Get(i));
      if (d >= 0 && d <= 2147483647.0) fds.push_back(static_cast<int>(d));
    }
  }
  ClaimFromJs(env, fds.data(), fds.size());
  return fds;
}

// closeAll(fds): close for each, in one call; what is not an open fd is
// passed over. Returns how many closed.
Napi::Value CloseAll(const Napi::CallbackInfo& info) {
  std::vector<int> fds = CloseListArg(info, "closeAll(fds): fds must be an array");
  return Napi::Number::New(info.Env(), static_cast<double>(FdCloseAll(fds.data(), fds.size())));
}

// closeCallers(fds) -> how many closed (what is not an open fd is passed
// over), or -1 - fd for the first number of the list that fdbridge holds
// for itself, nothing closed (FdCloseCallers).
Napi::Value CloseCallers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int> fds = CloseListArg(info, "closeCallers(fds): fds must be an array");
  size_t closed = 0;
  size_t refused = 0;
  int first_error = 0;
  if (FdCloseCallers(fds.data(), fds.size(), &closed, &refused, &first_error) != 0) {
    return Napi::Number::New(env, -1.0 - static_cast<double>(fds[refused]));
  }
  return Napi::Number::New(env, static_cast<double>(closed));
}

// closeCaller(fd) -> false when fdbridge holds the number for itself,
// nothing closed; else closes it (FdCloseCallers) and returns true; a
// number not open, or a close that failed, throws (SystemError).
Napi::Value CloseCaller(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  ClaimFromJs(env, &fd, 1);
  size_t closed = 0;
  size_t refused = 0;
  int first_error = 0;
  if (FdCloseCallers(&fd, 1, &closed, &refused, &first_error) != 0) return Napi::Boolean::New(env, false);
  CheckFdResult(env, first_error, "close");
  return Napi::Boolean::New(env, true);
}

}  // namespace

void ExportFdFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("pollReadable", Napi::Function::New<PollReadable>(env, "pollReadable"));
  exports.Set("dup", Napi::Function::New<Dup>(env, "dup"));
  exports.Set("close", Napi::Function::New<Close>(env, "close"));
  exports.Set("newReceiptTag", Napi::Function::New<NewReceiptTag>(env, "newReceiptTag"));
  exports.Set("claimReceipts", Napi::Function::New<ClaimReceipts>(env, "claimReceipts"));
  exports.Set("dupAll", Napi::Function::New<DupAll>(env, "dupAll"));
  exports.Set("firstNotGivable", Napi::Function::New<FirstNotGivable>(env, "firstNotGivable"));
  exports.Set("own", Napi::Function::New<Own>(env, "own"));
  exports.Set("installGenerations", Napi::Function::New<InstallGenerations>(env, "installGenerations"));
  exports.Set("disown", Napi::Function::New<Disown>(env, "disown"));
  exports.Set("disownGiven", Napi::Function::New<DisownGiven>(env, "disownGiven"));
  exports.Set("registration", Napi::Function::New<Registration>(env, "registration"));
  exports.Set("watchClosedByOthers", Napi::Function::New<WatchClosedByOthers>(env, "watchClosedByOthers"));
  exports.Set("closedByOther", Napi::Function::New<ClosedByOther>(env, "closedByOther"));
  exports.Set("foundClosedByOther", Napi::Function::New<FoundClosedByOther>(env, "foundClosedByOther"));
  exports.Set("ownedFdCount", Napi::Function::New<OwnedFdCount>(env, "ownedFdCount"));
  exports.Set("posixLock", Napi::Function::New<PosixLock>(env, "posixLock"));
  exports.Set("conflictingLock", Napi::Function::New<ConflictingLock>(env, "conflictingLock"));
  exports.Set("dupHigh", Napi::Function::New<DupHigh>(env, "dupHigh"));
  exports.Set("fdFloor", Napi::Function::New<FdFloorFn>(env, "fdFloor"));
  exports.Set("identity", Napi::Function::New<Identity>(env, "identity"));
  exports.Set("getFlags", Napi::Function::New<GetFlags>(env, "getFlags"));
  exports.Set("setCloexec", Napi::Function::New<SetCloexec>(env, "setCloexec"));
  exports.Set("setNonblock", Napi::Function::New<SetNonblock>(env, "setNonblock"));
  exports.Set("listFds", Napi::Function::New<ListFds>(env, "listFds"));
  exports.Set("holdFiles", Napi::Function::New<HoldFiles>(env, "holdFiles"));
  exports.Set("releaseHold", Napi::Function::New<ReleaseHold>(env, "releaseHold"));
  exports.Set("liveHolds", Napi::Function::New<LiveHolds>(env, "liveHolds"));
  exports.Set("getFdLimit", Napi::Function::New<GetFdLimit>(env, "getFdLimit"));
  exports.Set("setFdLimit", Napi::Function::New<SetFdLimit>(env, "setFdLimit"));
  exports.Set("pipe", Napi::Function::New<Pipe>(env, "pipe"));
  exports.Set("memfd", Napi::Function::New<Memfd>(env, "memfd"));
  exports.Set("eventfd", Napi::Function::New<Eventfd>(env, "eventfd"));
  exports.Set("pidfdOpen", Napi::Function::New<PidfdOpenFn>(env, "pidfdOpen"));
  exports.Set("pidfdGetfd", Napi::Function::New<PidfdGetfdFn>(env, "pidfdGetfd"));
  exports.Set("pidfdGetfdAll", Napi::Function::New<PidfdGetfdAllFn>(env, "pidfdGetfdAll"));
  exports.Set("closeAll", Napi::Function::New<CloseAll>(env, "closeAll"));
  exports.Set("closeCallers", Napi::Function::New<CloseCallers>(env, "closeCallers"));
  exports.Set("closeCaller", Napi::Function::New<CloseCaller>(env, "closeCaller"));
  exports.Set("handOver", Napi::Function::New<HandOver>(env, "handOver"));
  exports.Set("unclaimedFds", Napi::Function::New<UnclaimedFds>(env, "unclaimedFds"));
  exports.Set("runtimeCloses", Napi::Function::New<RuntimeCloses>(env, "runtimeCloses"));
  exports.Set("runtimeClosing", Napi::Function::New<RuntimeClosing>(env, "runtimeClosing"));
}

}  // namespace fdbridge
