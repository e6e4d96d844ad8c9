// The background closer (fd_ops.h: FdCloseInBackground) seen from JS.
#include "addon.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "fd_ops.h"

namespace fdbridge {

namespace {

// A background closer's ticket argument (one, or an array of them): each
// one closeInBackground gave.
std::vector<uint64_t> ArgTickets(Napi::Env env, const Napi::Value& v) {
  std::vector<uint64_t> tickets;
  auto add = [&](const Napi::Value& t) {
    double d = WholeNumber(t);
    if (d < 0) throw Napi::TypeError::New(env, "ticket must be a non-negative integer");
    if (!FdBackgroundCloseIssued(static_cast<uint64_t>(d))) {
      throw Napi::RangeError::New(env, "ticket " + std::to_string(static_cast<uint64_t>(d)) + " was never given by closeInBackground");
    }
    tickets.push_back(static_cast<uint64_t>(d));
  };
  if (v.IsArray()) {
    Napi::Array arr = v.As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) add(arr.Get(i));
  } else {
    add(v);
  }
  return tickets;
}

// closeInBackground(fds, owner = 0, given = false) -> ticket: the fds are
// closed by the background closer as one batch of `owner`'s (fd_ops.h:
// FdCloseInBackground); returns at once. The batch is done once
// backgroundCloseDone(ticket). `given`: they are the copies `owner`'s
// ledger was given (dupHigh's, dupAll's givenTo), each closed only while
// still that copy (FdCloseGivenInBackground).
Napi::Value CloseInBackground(const Napi::CallbackInfo& info) {
  std::vector<int> fds = ArgFdArray(info, "closeInBackground(fds, owner?, given?): fds must be an array");
  double owner = info.Length() > 1 && !info[1].IsUndefined() ? WholeNumber(info[1]) : 0;
  if (owner < 0) throw Napi::TypeError::New(info.Env(), "closeInBackground: owner must be a non-negative integer");
  bool given = info.Length() > 2 && info[2].ToBoolean().Value();
  if (given) {
    // Registered numbers, never kept for JavaScript (KeepForJs): nothing to claim.
    uint64_t ticket = FdCloseGivenInBackground(fds.data(), fds.size(), static_cast<uint64_t>(owner));
    return Napi::Number::New(info.Env(), static_cast<double>(ticket));
  }
  ClaimFromJs(info.Env(), fds.data(), fds.size());
  uint64_t ticket = FdCloseInBackground(fds.data(), fds.size(), static_cast<uint64_t>(owner), /*held_for_peer=*/true);
  return Napi::Number::New(info.Env(), static_cast<double>(ticket));
}

// The files closeClientFds expects at its fds' numbers: `value` undefined,
// none; else an array as long as the list, each entry undefined or null
// (no file expected there) or { dev, ino } (BigInts, as disownGiven gives
// them).
std::vector<std::optional<FdIdentity>> ArgExpectedFiles(Napi::Env env, Napi::Value value, size_t n) {
  std::vector<std::optional<FdIdentity>> expected;
  if (value.IsUndefined()) return expected;
  const char* usage = "closeClientFds(fds, owner, expected): expected must be an array as long as fds of { dev, ino } (BigInts) or undefined";
  if (!value.IsArray() || value.As<Napi::Array>().Length() != n) throw Napi::TypeError::New(env, usage);
  Napi::Array arr = value.As<Napi::Array>();
  expected.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = arr.Get(i);
    if (e.IsUndefined() || e.IsNull()) continue;
    if (!e.IsObject()) throw Napi::TypeError::New(env, usage);
    Napi::Value dev = e.As<Napi::Object>().Get("dev");
    Napi::Value ino = e.As<Napi::Object>().Get("ino");
    if (!dev.IsBigInt() || !ino.IsBigInt()) throw Napi::TypeError::New(env, usage);
    bool lossless = true;
    FdIdentity id{dev.As<Napi::BigInt>().Uint64Value(&lossless), 0, 0};
    bool ino_lossless = true;
    id.ino = ino.As<Napi::BigInt>().Uint64Value(&ino_lossless);
    if (!lossless || !ino_lossless) throw Napi::TypeError::New(env, usage);
    expected[i] = id;
  }
  return expected;
}

// closeClientFds(fds, owner, expected?, installs?) -> ticket:
// closeInBackground of fds a command holds as its client's
// (FdCloseClientFdsInBackground): one that is one of fdbridge's own fds
// now, whose number no longer holds the file `expected` names for it
// (ArgExpectedFiles), or whose number's install generation is not the one
// `installs` names (ArgInstalls), throws a SystemError EBADF naming it, and
// a list naming one number twice a TypeError, nothing handed over.
Napi::Value CloseClientFds(const Napi::CallbackInfo& info) {
  std::vector<int> fds = ArgFdArray(info, "closeClientFds(fds, owner): fds must be an array");
  double owner = info.Length() > 1 && !info[1].IsUndefined() ? WholeNumber(info[1]) : 0;
  if (owner < 0) throw Napi::TypeError::New(info.Env(), "closeClientFds: owner must be a non-negative integer");
  std::vector<std::optional<FdIdentity>> expected =
      ArgExpectedFiles(info.Env(), info.Length() > 2 ? info[2] : info.Env().Undefined(), fds.size());
  std::vector<uint64_t> installs =
      ArgInstalls(info.Env(), info.Length() > 3 ? info[3] : info.Env().Undefined(), fds.size(),
                  "closeClientFds(fds, owner, expected, installs): installs must be an array as long as fds of non-negative integers or undefined");
  uint64_t ticket = 0;
  int refused = -1;
  int r = FdCloseClientFdsInBackground(fds.data(), fds.size(), static_cast<uint64_t>(owner), expected.empty() ? nullptr : expected.data(),
                                       installs.empty() ? nullptr : installs.data(), &ticket, &refused);
  if (r != 0) ThrowNotClients(info.Env(), r, refused, fds);
  ClaimFromJs(info.Env(), fds.data(), fds.size());
  return Napi::Number::New(info.Env(), static_cast<double>(ticket));
}

// backgroundCloseDone(ticket) -> whether that batch is closed, every fd of it.
Napi::Value BackgroundCloseDone(const Napi::CallbackInfo& info) {
  std::vector<uint64_t> t = ArgTickets(info.Env(), info.Length() > 0 ? info[0] : info.Env().Undefined());
  return Napi::Boolean::New(info.Env(), FdBackgroundCloseDone(t.front()));
}

// afterBackgroundCloses(ticket | tickets, callback, keepAlive = true):
// callback() runs on this thread's event loop once every batch named is
// closed (never synchronously). The thread-safe function that carries the
// news keeps the loop alive while it waits (unless keepAlive is false: a
// close blocked for good must not keep a process from exiting), and is
// released once called.
// (CallOnLoopOnce: a close may end after this environment's teardown).
Napi::Value AfterBackgroundCloses(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !(info[0].IsNumber() || info[0].IsArray()) || !info[1].IsFunction()) {
    throw Napi::TypeError::New(env, "afterBackgroundCloses(ticket, callback)");
  }
  std::vector<uint64_t> tickets = ArgTickets(env, info[0]);
  CallOnLoopOnce callback(env, info[1].As<Napi::Function>(), "afterBackgroundCloses");
  if (info.Length() > 2 && info[2].IsBoolean() && !info[2].As<Napi::Boolean>().Value()) callback.Unref(env);
  FdAfterBackgroundCloses(tickets.data(), tickets.size(), [callback]() { callback.Call(); });
  return env.Undefined();
}

// backgroundClosesDone() -> background closes finished since the process started.
Napi::Value BackgroundClosesDone(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesDone()));
}

// openBackgroundCloses() -> the tickets of every batch not closed yet.
Napi::Value OpenBackgroundCloses(const Napi::CallbackInfo& info) {
  return TicketArray(info.Env(), FdOpenBackgroundCloses());
}

// closerThreads() -> { threads, busy, made, max, perOwner, reserve,
// reservedOwners, maxReserve }: the background closer's pool now, how many
// threads it ever started, and its caps (fd_ops.h).
Napi::Value CloserThreads(const Napi::CallbackInfo& info) {
  size_t threads, busy, reserve, owners;
  uint64_t made;
  FdCloserThreads(&threads, &busy, &made);
  FdCloserReserve(&reserve, &owners);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("threads", Napi::Number::New(info.Env(), static_cast<double>(threads)));
  o.Set("busy", Napi::Number::New(info.Env(), static_cast<double>(busy)));
  o.Set("made", Napi::Number::New(info.Env(), static_cast<double>(made)));
  o.Set("max", Napi::Number::New(info.Env(), static_cast<double>(kMaxCloserThreads)));
  o.Set("perOwner", Napi::Number::New(info.Env(), static_cast<double>(kCloserThreadsPerOwner)));
  o.Set("reserve", Napi::Number::New(info.Env(), static_cast<double>(reserve)));
  o.Set("reservedOwners", Napi::Number::New(info.Env(), static_cast<double>(owners)));
  o.Set("minReserve", Napi::Number::New(info.Env(), static_cast<double>(kCloserReserveThreads)));
  o.Set("maxReserve", Napi::Number::New(info.Env(), static_cast<double>(kMaxCloserReserveThreads)));
  return o;
}

// reserveCloserThreads(owners) -> the reserve now: keeps a reserve thread
// for `owners` more owners (negative: gives them back; see fd_ops.h).
Napi::Value ReserveCloserThreads(const Napi::CallbackInfo& info) {
  double owners = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0.5;
  if (owners != std::floor(owners) || owners < -1e9 || owners > 1e9) {
    throw Napi::TypeError::New(info.Env(), "reserveCloserThreads: owners must be an integer");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(FdReserveCloserThreads(static_cast<int64_t>(owners))));
}

Napi::Value BackgroundClosesPending(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesPending()));
}

// newCloseOwner() -> an owner of this process's own for closeInBackground,
// never given before in this process (fd_ops.h: FdNewCloseOwner).
Napi::Value NewCloseOwner(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(FdNewCloseOwner()));
}

// backgroundCloseFds() -> { queued, running }: the numbers of the fds
// waiting for the closer, and of those it is closing (fd_ops.h).
Napi::Value BackgroundCloseFds(const Napi::CallbackInfo& info) {
  std::vector<int> queued, running;
  FdBackgroundCloseFds(&queued, &running);
  auto array = [&info](const std::vector<int>& fds) {
    Napi::Array a = Napi::Array::New(info.Env(), fds.size());
    for (size_t i = 0; i < fds.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), fds[i]));
    return a;
  };
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("queued", array(queued));
  o.Set("running", array(running));
  return o;
}

// backgroundClosesOfPeerFds(owner?) -> the fds peers gave that wait for the closer (owner's only, if given).
Napi::Value BackgroundClosesOfPeerFds(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    double owner = WholeNumber(info[0]);
    if (owner < 0) throw Napi::TypeError::New(info.Env(), "backgroundClosesOfPeerFds: owner must be a non-negative integer");
    return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesOfPeerFds(static_cast<uint64_t>(owner))));
  }
  return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesOfPeerFds()));
}

// backgroundClosesOfOwnSockets(owner?) -> our own sockets that wait for the closer (owner's only, if given).
Napi::Value BackgroundClosesOfOwnSockets(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    double owner = WholeNumber(info[0]);
    if (owner < 0) throw Napi::TypeError::New(info.Env(), "backgroundClosesOfOwnSockets: owner must be a non-negative integer");
    return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesOfOwnSockets(static_cast<uint64_t>(owner))));
  }
  return Napi::Number::New(info.Env(), static_cast<double>(FdBackgroundClosesOfOwnSockets()));
}

}  // namespace

void ExportBackgroundCloses(Napi::Env env, Napi::Object exports) {
  exports.Set("closeInBackground", Napi::Function::New<CloseInBackground>(env, "closeInBackground"));
  exports.Set("closeClientFds", Napi::Function::New<CloseClientFds>(env, "closeClientFds"));
  exports.Set("afterBackgroundCloses", Napi::Function::New<AfterBackgroundCloses>(env, "afterBackgroundCloses"));
  exports.Set("backgroundClosesDone", Napi::Function::New<BackgroundClosesDone>(env, "backgroundClosesDone"));
  exports.Set("backgroundCloseDone", Napi::Function::New<BackgroundCloseDone>(env, "backgroundCloseDone"));
  exports.Set("closerThreads", Napi::Function::New<CloserThreads>(env, "closerThreads"));
  exports.Set("reserveCloserThreads", Napi::Function::New<ReserveCloserThreads>(env, "reserveCloserThreads"));
  exports.Set("openBackgroundCloses", Napi::Function::New<OpenBackgroundCloses>(env, "openBackgroundCloses"));
  exports.Set("backgroundClosesPending", Napi::Function::New<BackgroundClosesPending>(env, "backgroundClosesPending"));
  exports.Set("newCloseOwner", Napi::Function::New<NewCloseOwner>(env, "newCloseOwner"));
  exports.Set("backgroundCloseFds", Napi::Function::New<BackgroundCloseFds>(env, "backgroundCloseFds"));
  exports.Set("backgroundClosesOfPeerFds", Napi::Function::New<BackgroundClosesOfPeerFds>(env, "backgroundClosesOfPeerFds"));
  exports.Set("backgroundClosesOfOwnSockets", Napi::Function::New<BackgroundClosesOfOwnSockets>(env, "backgroundClosesOfOwnSockets"));
}

}  // namespace fdbridge
