// The Socket class (native/unix_socket.h seen from JS), and socketsAlive().
#include "addon.h"
#include "message_batch.h"

#include <poll.h>
#include <stddef.h>
#include <sys/un.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fd_ops.h"
#include "scm_rights.h"
#include "sock_ops.h"
#include "unique_fd.h"
#include "unix_socket.h"

namespace fdbridge {

namespace {

// Socket objects constructed and not yet destroyed (garbage collected), in
// every environment of the process: one that stays counted after close() is
// memory nobody can free. Process-wide because a destructor may run after
// its environment's instance data is gone.
std::atomic<size_t> g_sockets_alive{0};

}  // namespace

// ---------------------------------------------------------------------------
// Socket: new Socket(fd, type, { maxFds, bufferSize }, onMessage, onAccept)
//   onMessage(err, data?: Buffer, fds?: number[])
//   onAccept(err, fd?: number)
// The JS object is held strongly from construction until close(): a socket is
// released by closing it, never by garbage collection.

class SocketWrap : public Napi::ObjectWrap<SocketWrap>, public UnixSocket::Delegate, public MessageBatch::Target {
  // A queued send's completion callback and tag (see HoldCallback).
  struct PendingSend {
    Napi::FunctionReference fn;
    Napi::Reference<Napi::Value> tag;
    double number = 0;
    bool has_number = false;
    bool boxed = false;
  };

 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Socket",
                       {
                           InstanceMethod<&SocketWrap::Send>("send"),
                           InstanceMethod<&SocketWrap::SendTo>("sendTo"),
                           InstanceMethod<&SocketWrap::ReceiveFrom>("receiveFrom"),
                           InstanceMethod<&SocketWrap::RecordReceiptsFor>("recordReceiptsFor"),
                           InstanceMethod<&SocketWrap::StartReading>("startReading"),
                           InstanceMethod<&SocketWrap::StopReading>("stopReading"),
                           InstanceMethod<&SocketWrap::StartAccepting>("startAccepting"),
                           InstanceMethod<&SocketWrap::StopAccepting>("stopAccepting"),
                           InstanceMethod<&SocketWrap::RefHandle>("ref"),
                           InstanceMethod<&SocketWrap::UnrefHandle>("unref"),
                           InstanceMethod<&SocketWrap::CloseMethod>("close"),
                           InstanceMethod<&SocketWrap::BoundFile>("boundFile"),
                           InstanceAccessor<&SocketWrap::GetFd>("fd"),
                           InstanceAccessor<&SocketWrap::GetQueued>("queuedSends"),
                           InstanceAccessor<&SocketWrap::GetFullSends>("fullSends"),
                           InstanceAccessor<&SocketWrap::GetSentFromQueue>("sentFromQueue"),
                           InstanceAccessor<&SocketWrap::GetKeptTickets>("keptTickets"),
                           InstanceAccessor<&SocketWrap::GetQueuedBytes>("queuedSendBytes"),
                           InstanceMethod<&SocketWrap::SetSendQueueLimits>("setSendQueueLimits"),
                           InstanceMethod<&SocketWrap::WatchHangup>("watchHangup"),
                           InstanceMethod<&SocketWrap::HungUp>("hungUp"),
                           InstanceMethod<&SocketWrap::LostMethod>("lost"),
                           InstanceAccessor<&SocketWrap::GetBuffer>("buffer"),
                           InstanceMethod<&SocketWrap::UseBackgroundCloser>("useBackgroundCloser"),
                           InstanceMethod<&SocketWrap::CloseFdsInBackground>("closeInBackground"),
                           InstanceMethod<&SocketWrap::CloseAccepted>("closeAccepted"),
                           InstanceMethod<&SocketWrap::SetReceiveBufferSize>("setReceiveBufferSize"),
                           InstanceMethod<&SocketWrap::BackgroundCloseTickets>("backgroundCloseTickets"),
                       });
  }

  explicit SocketWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SocketWrap>(info) {
    Napi::Env env = info.Env();
    int fd = ArgFd(info, 0);
    int type = ArgSockType(info, 1);
    size_t max_fds = kMaxFdsPerMessage;
    size_t buffer_size = 64 * 1024;
    bool reuse_buffer = false;
    size_t queue_limit = 0;
    bool has_queue_limit = false;
    std::string caller;
    bool caller_own = false;
    bool caller_cloexec = false;
    if (info.Length() > 2 && info[2].IsObject()) {
      Napi::Object opts = info[2].As<Napi::Object>();
      Napi::Value c = opts.Get("caller");
      if (c.IsString()) caller = c.As<Napi::String>().Utf8Value();
      caller_own = opts.Get("callerOwn").ToBoolean();
      caller_cloexec = opts.Get("callerCloexec").ToBoolean();
      // Given, each is an integer in its range: a fraction, NaN or a string
      // is refused, never truncated (NaN taken as 0 fds would truncate
      // every datagram that carries one).
      Napi::Value mf = opts.Get("maxFds");
      if (!mf.IsUndefined()) {
        double v = mf.IsNumber() ? mf.As<Napi::Number>().DoubleValue() : -1;
        if (!(v >= 0 && v <= static_cast<double>(kMaxFdsPerMessage) && v == floor(v))) {
          throw Napi::RangeError::New(env, "maxFds must be between 0 and 253");
        }
        max_fds = static_cast<size_t>(v);
      }
      Napi::Value bs = opts.Get("bufferSize");
      if (!bs.IsUndefined()) {
        double v = bs.IsNumber() ? bs.As<Napi::Number>().DoubleValue() : 0;
        if (!(v >= 1 && v <= 64.0 * 1024 * 1024 && v == floor(v))) {
          throw Napi::RangeError::New(env, "bufferSize must be between 1 and 64 MiB");
        }
        buffer_size = static_cast<size_t>(v);
      }
      reuse_buffer = opts.Get("reuseBuffer").ToBoolean();
      batched_ = opts.Get("batch").ToBoolean();
      Napi::Value ql = opts.Get("sendQueueLimit");
      if (!ql.IsUndefined()) {
        double v = ql.IsNumber() ? ql.As<Napi::Number>().DoubleValue() : -1;
        if (!(v >= 0 && v <= 9007199254740991.0 && v == floor(v))) {
          throw Napi::RangeError::New(env, "sendQueueLimit must be a non-negative integer (bytes)");
        }
        queue_limit = static_cast<size_t>(v);
        has_queue_limit = true;
      }
    }
    if (info.Length() > 3 && info[3].IsFunction()) on_message_ = Napi::Persistent(info[3].As<Napi::Function>());
    if (info.Length() > 4 && info[4].IsFunction()) on_accept_ = Napi::Persistent(info[4].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      throw Napi::Error::New(env, "Socket: no event loop");
    }
    // reuseBuffer: messages land in one ArrayBuffer (exposed as `buffer`) and
    // onMessage gets the length instead of a fresh Buffer: no allocation per
    // message. The data is only valid until the callback returns. It is made
    // when the socket first reads (ProvideReceiveBuffer).
    reuse_buffer_ = reuse_buffer;
    int err = 0;
    const char* failed = "uv_poll_init";
    bool refused = false;
    {
      // A caller's number (`caller`: the operation, new UnixSocket or
      // fromListeningFd): one fdbridge holds for itself is refused, else it
      // is set up, registered (`callerOwn`) and polled, all under one hold
      // of the registry's lock (fd_ops.h, OwnedFdsLock), so that no fd of
      // ours another thread makes at the number after the look is taken
      // by a second owner, which would poll it and close it again.
      // A socket fdbridge made for itself (no `caller`: connect, listen,
      // pair, accept) was made and registered, or its install noted, in one
      // hold where it was made (sock_ops.cc); nothing here looks at the
      // registry to decide whether to take it, so it is polled with no hold,
      // as FdWatch and RelayPump poll theirs: a socket made on one thread
      // does not wait for another thread's hold (a pull of 253 fds, a dup
      // of a long list) to start polling.
      std::optional<OwnedFdsLock> owned;
      if (!caller.empty()) {
        owned.emplace();
        refused = FdRefuseOwned(&fd, 1) != 0;
        if (!refused && caller_cloexec) {
          err = FdSetCloexec(fd, true);
          if (err == 0) err = FdSetNonblock(fd, true);
          if (err != 0) failed = "fcntl";
        }
        if (!refused && err == 0 && caller_own) FdMarkOwned(&fd, 1);
      }
      if (!refused && err == 0) {
        core_ = UnixSocket::Create(loop, fd, type, max_fds, buffer_size, this, &err);
        // Not taken: the fd stays the caller's, as it came.
        if (core_ == nullptr && caller_own) FdDisown(fd);
      }
    }
    // Thrown once the lock is let go: the error is made in JavaScript.
    if (refused) ThrowOwnFd(env, caller, fd);
    if (core_ == nullptr) ThrowSystem(env, err, failed);
    if (!on_accept_.IsEmpty()) core_->SetListening(true);
    TakenByNative(env, &fd, 1);  // closed by close() or this environment's cleanup hook
    if (has_queue_limit) core_->SetSendQueueLimits(queue_limit, SIZE_MAX);
    async_context_ = std::make_unique<Napi::AsyncContext>(env, "FdbridgeSocket", Value());
    Data(env)->sockets.insert(this);
    g_sockets_alive++;
    Ref();  // strong until close()
  }

  ~SocketWrap() override {
    // Only reached after close() or at environment teardown (the object is
    // strongly referenced while open); the cleanup hook has detached core_.
    if (core_ != nullptr) Detach(nullptr, nullptr);
    g_sockets_alive--;
  }

  // Closes the socket. Called by close() and by the cleanup hook. Returns
  // the tickets of its background closes not done yet (its queued sends'
  // copies, which the close hands to the closer, among them).
  std::vector<uint64_t> Detach(void (*on_freed)(void*), void* arg, bool shut_down = true) {
    if (core_ == nullptr) {
      return {};
    }
    UnixSocket* core = core_;
    core_ = nullptr;
    closed_owner_ = core->background_close_owner();
    closed_type_ = core->type();
    InstanceData* data = Data(Env());
    if (data != nullptr) data->sockets.erase(this);
    // Messages read and not yet handed over go with the socket.
    if (data != nullptr && data->batch != nullptr) data->batch->Forget(this);
    // Queued sends fail with ECANCELED through OnSendComplete while core is
    // closing; deliver those before dropping the callbacks. At environment
    // teardown (on_freed set) JS can no longer run: drop them unheard.
    if (on_freed != nullptr) send_callbacks_.clear();
    closing_ = true;
    // At environment teardown (a worker terminated: no close() runs) the
    // socket file this socket bound goes as close() removes it, while the
    // socket still holds the name (nobody can have replaced it as stale),
    // and only if it is still that very file.
    if (on_freed != nullptr && bound_file_) SockUnlinkFileIfSame(bound_file_->path.c_str(), bound_file_->dev, bound_file_->ino);
    core->Close(shut_down, on_freed, arg);
    // Freed only by the close's uv_close callback, on a later turn of the loop.
    std::vector<uint64_t> tickets = core->BackgroundCloseTickets();
    closed_lost_ = core->CheckLost();
    closing_ = false;
    send_callbacks_.clear();
    // Break the cycle that would keep this object alive forever: these
    // persistent references are GC roots, and the JS functions' closures
    // (and the receive buffer's view) refer back to the JS wrapper, which
    // owns this object. A closed socket delivers no more events, so nothing
    // needs them; left set, every closed socket kept its receive buffer.
    on_message_.Reset();
    on_accept_.Reset();
    buffer_ref_.Reset();
    return tickets;
  }

  // The socket of a JS Socket object, or nullptr when `value` is none (or closed).
  static UnixSocket* CoreOf(Napi::Env env, Napi::Value value) {
    InstanceData* data = Data(env);
    if (!value.IsObject() || data == nullptr || !value.As<Napi::Object>().InstanceOf(data->socket_ctor.Value())) {
      return nullptr;
    }
    return Unwrap(value.As<Napi::Object>())->core_;
  }

  void ReleaseJsRef() {
    if (!released_) {
      released_ = true;
      Unref();
    }
  }

 private:
  UnixSocket* Core(Napi::Env env, const char* what) {
    if (core_ == nullptr) {
      throw Napi::Error(env, SystemError(env, -EBADF, what));
    }
    return core_;
  }

  // send(data, fds?, callback?, tag?, exempt?) -> 0 sent now | 1 queued (callback(err|null, tag) later);
  // exempt: queued even past the send queue's limit.
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const char* data;
    size_t len;
    ArgBytes(info, 0, &data, &len);
    std::vector<int>& fds = scratch_fds_;
    ArgFdList(info, 1, &fds);
    UnixSocket* core = Core(env, "sendmsg");
    uint32_t id = core->NewSendId();
    bool exempt = info.Length() > 4 && info[4].ToBoolean();
    bool own = info.Length() > 5 && info[5].ToBoolean();
    // A caller's numbers: one of ours is refused as closed (fd_ops.h,
    // OwnedFdsLock), checked and sent under one lock. `own`: the fds are
    // our pins, sent on the caller's behalf.
    OwnedFdsLock owned;
    if (!own) {
      int refused = FdRefuseOwned(fds.data(), fds.size());
      if (refused < 0) ThrowSystem(env, refused, "sendmsg");
    }
    int r = core->Send(data, len, fds.data(), fds.size(), id, exempt);
    if (r < 0) {
      if (r == -EINVAL && core->type() == SOCK_STREAM && len == 0 && !fds.empty()) {
        throw Napi::RangeError::New(env, "a STREAM send of 0 bytes cannot carry fds: Linux would drop them");
      }
      ThrowSystem(env, r, "sendmsg");
    }
    if (r == UnixSocket::kQueueFull) ThrowQueueFull(env, core, "sendmsg");
    if (r == UnixSocket::kQueued) AwaitSendCompletion(info, 2, id);
    return Napi::Number::New(env, r);
  }

  // A queued send's callback: info[at] (a function) is called once with
  // (err, tag), tag being info[at + 1]. The message is queued already: from
  // here on nothing may throw, or the caller would think nothing was sent
  // while the message waits to go, and never hear of it.
  void AwaitSendCompletion(const Napi::CallbackInfo& info, size_t at, uint32_t id) {
    if (info.Length() <= at || !info[at].IsFunction()) return;
    send_callbacks_.emplace(id, HoldCallback(info.Env(), info[at], info.Length() > at + 1 ? info[at + 1] : info.Env().Undefined()));
  }

  // An optional tag (any value) comes back as the callback's second
  // argument, so one callback can serve every send: no closure per send.
  // References are made only for a queued send (not per message). Node-API
  // before version 10 refers to objects and functions only: a number is
  // kept as a double, another primitive in a one-element array. Never
  // throws: a reference that cannot be made (the environment is going
  // away) leaves that part empty.
  PendingSend HoldCallback(Napi::Env env, Napi::Value fn, Napi::Value tag) {
    PendingSend p;
    napi_ref ref = nullptr;
    if (napi_create_reference(env, fn, 1, &ref) == napi_ok) p.fn = Napi::FunctionReference(env, ref);
    if (tag.IsUndefined()) return p;
    if (tag.IsNumber()) {
      p.number = tag.As<Napi::Number>().DoubleValue();
      p.has_number = true;
      return p;
    }
    napi_value held = tag;
    if (!tag.IsObject() && !tag.IsFunction()) {
      napi_value box;
      if (napi_create_array_with_length(env, 1, &box) != napi_ok || napi_set_element(env, box, 0, tag) != napi_ok) {
        return p;
      }
      held = box;
      p.boxed = true;
    }
    ref = nullptr;
    if (napi_create_reference(env, held, 1, &ref) == napi_ok) p.tag = Napi::Reference<Napi::Value>(env, ref);
    return p;
  }

  napi_value TagValue(Napi::Env env, const PendingSend& p) {
    if (p.has_number) return Napi::Number::New(env, p.number);
    if (p.tag.IsEmpty()) return env.Undefined();
    Napi::Value v = p.tag.Value();
    if (!p.boxed) return v;
    napi_value out;
    if (napi_get_element(env, v, 0, &out) != napi_ok) return env.Undefined();
    return out;
  }

  // setSendQueueLimits(limit, pauseReadingAt): bytes; -1 for pauseReadingAt: never.
  Napi::Value SetSendQueueLimits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    double limit = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    double pause = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -2;
    if (!(limit >= 0 && limit <= 9007199254740991.0 && limit == floor(limit))) {
      throw Napi::RangeError::New(env, "the send queue limit must be a non-negative integer (bytes)");
    }
    if (!(pause == -1 || (pause >= 0 && pause <= 9007199254740991.0 && pause == floor(pause)))) {
      throw Napi::RangeError::New(env, "pauseReadingAt must be a non-negative integer (bytes), or -1 for never");
    }
    if (core_ != nullptr) {
      core_->SetSendQueueLimits(static_cast<size_t>(limit), pause < 0 ? SIZE_MAX : static_cast<size_t>(pause));
    }
    return env.Undefined();
  }
  Napi::Value WatchHangup(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->WatchHangup(info.Length() > 0 && info[0].ToBoolean());
    return info.Env().Undefined();
  }
  // hungUp() -> true when the peer has closed its end (or both directions
  // are shut): POLLHUP now, without reading.
  Napi::Value HungUp(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), core_ != nullptr && (PollNow(core_->fd(), 0) & POLLHUP) != 0);
  }
  // lost() -> true when the socket's fd was closed behind fdbridge's back
  // (UnixSocket::CheckLost); once closed, whether it was then.
  Napi::Value LostMethod(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), core_ != nullptr ? core_->CheckLost() : closed_lost_);
  }
  Napi::Value GetQueuedBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? static_cast<double>(core_->queued_bytes()) : 0);
  }

  // sendTo(name, abstract, data, fds?, waitWhenFull, callback?, tag?) -> 0 sent now | 1 queued
  // (a full receiver and waitWhenFull; callback(err|null, tag) later).
  Napi::Value SendTo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = ArgSockName(info, 0);
    bool abstract = info.Length() > 1 && info[1].ToBoolean();
    struct sockaddr_un to;
    socklen_t to_len;
    int err = SockAddress(name.data(), name.size(), abstract, &to, &to_len);
    if (err != 0) ThrowSystem(env, err, "sendto");
    const char* data;
    size_t len;
    ArgBytes(info, 2, &data, &len);
    std::vector<int>& fds = scratch_fds_;
    ArgFdList(info, 3, &fds);
    bool wait = info.Length() > 4 && info[4].ToBoolean();
    UnixSocket* core = Core(env, "sendto");
    if (core->type() != SOCK_DGRAM) throw Napi::TypeError::New(env, "sendTo needs a DGRAM socket");
    uint32_t id = core->NewSendId();
    OwnedFdsLock owned;  // as in Send: a number of ours is refused as closed
    int refused = FdRefuseOwned(fds.data(), fds.size());
    if (refused < 0) ThrowSystem(env, refused, "sendto");
    int r = core->SendTo(&to, to_len, data, len, fds.data(), fds.size(), id, wait);
    if (r < 0) ThrowSystem(env, r, "sendto");
    if (r == UnixSocket::kQueueFull || r == UnixSocket::kTooManyReceivers) {
      ThrowQueueFull(env, core, "sendto", r == UnixSocket::kTooManyReceivers);
    }
    if (r == UnixSocket::kQueued) AwaitSendCompletion(info, 5, id);
    return Napi::Number::New(env, r);
  }

  Napi::Value ReceiveFrom(const Napi::CallbackInfo& info) {
    Core(info.Env(), "recvfrom")->ReceiveFrom(info.Length() > 0 && info[0].ToBoolean());
    return info.Env().Undefined();
  }

  // recordReceiptsFor(tag): see UnixSocket::RecordReceiptsFor.
  Napi::Value RecordReceiptsFor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    double tag = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    if (!(tag >= 1 && tag <= 9007199254740991.0) || tag != static_cast<double>(static_cast<uint64_t>(tag))) {
      throw Napi::TypeError::New(env, "recordReceiptsFor(tag): tag must be a receipt tag (newReceiptTag)");
    }
    Core(env, "recvmsg")->RecordReceiptsFor(static_cast<uint64_t>(tag));
    return env.Undefined();
  }

  Napi::Value StartReading(const Napi::CallbackInfo& info) {
    Core(info.Env(), "recvmsg")->StartReading();
    return info.Env().Undefined();
  }
  Napi::Value StopReading(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->StopReading();
    return info.Env().Undefined();
  }
  Napi::Value StartAccepting(const Napi::CallbackInfo& info) {
    Core(info.Env(), "accept4")->StartAccepting();
    return info.Env().Undefined();
  }
  Napi::Value StopAccepting(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->StopAccepting();
    return info.Env().Undefined();
  }
  Napi::Value RefHandle(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->Ref();
    return info.Env().Undefined();
  }
  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->Unref();
    return info.Env().Undefined();
  }
  // boundFile(path) -> whether it was noted: the socket file this socket
  // bound (an absolute path), noted with its identity now (right after the
  // bind), to be removed at environment teardown if the socket is still
  // open then (see Detach). No socket file there (gone already): false.
  Napi::Value BoundFile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "boundFile(path): path must be a string");
    std::string path = info[0].As<Napi::String>().Utf8Value();
    if (path.empty() || path[0] != '/' || path.find('\0') != std::string::npos) {
      throw Napi::TypeError::New(env, "boundFile(path): path must be absolute, with no NUL byte");
    }
    BoundFileId id{path, 0, 0};
    if (core_ == nullptr || SockFileIdentity(path.c_str(), &id.dev, &id.ino) != 0) return Napi::Boolean::New(env, false);
    bound_file_ = std::move(id);
    return Napi::Boolean::New(env, true);
  }
  // close({ shutdown = true }?) -> the tickets of the socket's background
  // closes not done yet (see Detach), for a caller that waits for them
  // (afterBackgroundCloses). shutdown false: only this copy, as is (see
  // UnixSocket::Close).
  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    bool shut_down = true;
    if (info.Length() > 0 && info[0].IsObject()) {
      Napi::Value v = info[0].As<Napi::Object>().Get("shutdown");
      if (!v.IsUndefined()) shut_down = v.ToBoolean();
    }
    std::vector<uint64_t> tickets = Detach(nullptr, nullptr, shut_down);
    ReleaseJsRef();
    return TicketArray(info.Env(), tickets);
  }
  Napi::Value GetFd(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? core_->fd() : -1);
  }
  char* ProvideReceiveBuffer(size_t len) override {
    if (!reuse_buffer_ || !CanCallIntoJs()) return nullptr;  // the socket's own; each message copied
    Napi::HandleScope scope(Env());
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(Env(), len);
    buffer_ref_ = Napi::Persistent(ab);
    return static_cast<char*>(ab.Data());
  }

  // setReceiveBufferSize(bytes) -> whether it took: before the first read only.
  Napi::Value SetReceiveBufferSize(const Napi::CallbackInfo& info) {
    double v = WholeNumber(info.Length() > 0 ? info[0] : info.Env().Undefined());
    if (v < 1 || v > 64 * 1024 * 1024) throw Napi::RangeError::New(info.Env(), "setReceiveBufferSize: bytes must be between 1 and 64 MiB");
    return Napi::Boolean::New(info.Env(), core_ != nullptr && core_->SetReceiveBufferSize(static_cast<size_t>(v)));
  }

  // useBackgroundCloser(on, owner = 0): see UnixSocket::UseBackgroundCloser.
  Napi::Value UseBackgroundCloser(const Napi::CallbackInfo& info) {
    double owner = info.Length() > 1 && !info[1].IsUndefined() ? WholeNumber(info[1]) : 0;
    if (owner < 0) throw Napi::TypeError::New(info.Env(), "useBackgroundCloser: owner must be a non-negative integer");
    if (core_ != nullptr) core_->UseBackgroundCloser(info.Length() > 0 && info[0].ToBoolean(), static_cast<uint64_t>(owner));
    return info.Env().Undefined();
  }
  // closeInBackground(fds) -> ticket: see UnixSocket::CloseInBackground. A
  // closed socket hands them over all the same (CloseUnclaimed).
  Napi::Value CloseFdsInBackground(const Napi::CallbackInfo& info) {
    std::vector<int> fds = ArgFdArray(info, "closeInBackground(fds): fds must be an array");
    ClaimFromJs(info.Env(), fds.data(), fds.size());
    return Napi::Number::New(info.Env(), static_cast<double>(CloseUnclaimed(fds.data(), fds.size())));
  }
  // closeAccepted(fd): see UnixSocket::CloseAccepted. A closed socket
  // closes it all the same (CloseUnclaimedConnection).
  Napi::Value CloseAccepted(const Napi::CallbackInfo& info) {
    int fd = ArgFd(info, 0);
    ClaimFromJs(info.Env(), &fd, 1);
    CloseUnclaimedConnection(fd);
    return info.Env().Undefined();
  }
  // backgroundCloseTickets() -> the tickets of this socket's background
  // closes not yet done; once closed, of those handed over since (close()
  // returned the others).
  Napi::Value BackgroundCloseTickets(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (core_ != nullptr) return TicketArray(env, core_->BackgroundCloseTickets());
    FdDropDoneTickets(&late_tickets_);
    late_kept_ = late_tickets_.size();
    return TicketArray(env, late_tickets_);
  }
  Napi::Value GetBuffer(const Napi::CallbackInfo& info) {
    return buffer_ref_.IsEmpty() ? info.Env().Undefined() : buffer_ref_.Value();
  }
  Napi::Value GetFullSends(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? static_cast<double>(core_->full_sends()) : 0);
  }
  Napi::Value GetSentFromQueue(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? static_cast<double>(core_->sent_from_queue()) : 0);
  }
  // How many tickets of background closes a closed socket keeps now, done
  // ones included until its next drop (for the tests that bound them).
  Napi::Value GetKeptTickets(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(late_tickets_.size()));
  }
  Napi::Value GetQueued(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? static_cast<double>(core_->queued_sends()) : 0);
  }

  // Calls a JS callback as an event-loop callback (microtasks run after it);
  // an exception it throws becomes an uncaught exception, as for any event.
  //
  // Returns false only when JS certainly did not run, so the caller still
  // owns whatever it meant to hand over (and must close it). That happens
  // while an environment shuts down: Node keeps running the loop to close its
  // handles (worker exit, worker.terminate(), process.exit in a worker)
  // before our cleanup hook closes the sockets, so a poll event can still
  // arrive, and accept4/recvmsg install fds that no JS callback will own.
  // If JS may have run (terminated part-way), the fds are left alone: a leak
  // is recoverable, a double close in a multi-threaded process is not.
  bool Emit(Napi::FunctionReference& fn, const std::initializer_list<napi_value>& args) {
    Napi::Env env = Env();
    if (!CanCallIntoJs()) return false;
    napi_value result;
    napi_status status = napi_make_callback(env, *async_context_, Value(), fn.Value(), args.size(),
                                            args.begin(), &result);
    if (status != napi_ok) RaisePendingException(env);
    return true;
  }

  bool CanCallIntoJs() { return fdbridge::CanCallIntoJs(*this); }

  // A received message's fds go to JavaScript: kept by the environment until
  // the library hands them to whoever receives them (KeepForJs). On a
  // socket whose fds are registered as they arrive, the registry holds them.
  void KeepReceived(const int* fds, size_t nfds) {
    if (nfds > 0 && core_ != nullptr && !core_->receives_own()) KeepForJs(Env(), fds, nfds);
  }

  // An exception raised while building a callback's arguments (they call
  // into JS: the error factory) becomes an uncaught exception, unless the
  // environment is shutting down, when there is nobody left to tell.
  void ReportException(const Napi::Error& e) {
    if (CanCallIntoJs()) napi_fatal_exception(Env(), e.Value());
  }

  // The delegate callbacks below run from uv_poll, outside any JS frame: a C++
  // exception escaping them would abort the process, so none may escape.

  // A message's fds are ours until JS has them: closed here on every path
  // where they would reach nobody.
  void OnMessage(const char* data, size_t len, const int* fds, size_t nfds) override {
    if (batched_ && TakeIntoBatch(data, len, fds, nfds)) return;
    Unclaimed owned(this, fds, nfds);
    Napi::Env env = Env();
    if (on_message_.IsEmpty() || !CanCallIntoJs()) return;
    Napi::HandleScope scope(env);
    napi_value buf;
    napi_value arr;
    try {
      buf = buffer_ref_.IsEmpty() ? static_cast<napi_value>(Napi::Buffer<char>::Copy(env, data, len))
                                  : static_cast<napi_value>(Napi::Number::New(env, static_cast<double>(len)));
      // Most replies carry no fds: undefined saves an array per message.
      arr = nfds == 0 ? static_cast<napi_value>(env.Undefined()) : static_cast<napi_value>(FdArray(env, fds, nfds));
    } catch (const Napi::Error& e) {
      ReportException(e);  // could not build the arguments
      return;
    }
    KeepReceived(fds, nfds);
    if (Emit(on_message_, {env.Null(), buf, arr})) {
      owned.release();  // the handler's now
    } else {
      ClaimFromJs(env, fds, nfds);  // closed here after all
    }
  }

  // onMessage(null, data, fds, from, credentials): `from` is null for an
  // unbound sender, a path or { abstract: name } (see SenderAddress);
  // `credentials` ({ pid, uid, gid }) only on a socket with SO_PASSCRED.
  void OnDatagram(const char* data, size_t len, const int* fds, size_t nfds, const ScmSender& sender) override {
    Unclaimed owned(this, fds, nfds);  // as in OnMessage
    Napi::Env env = Env();
    if (on_message_.IsEmpty() || !CanCallIntoJs()) return;
    Napi::HandleScope scope(env);
    napi_value buf, arr, from, cred;
    try {
      buf = buffer_ref_.IsEmpty() ? static_cast<napi_value>(Napi::Buffer<char>::Copy(env, data, len))
                                  : static_cast<napi_value>(Napi::Number::New(env, static_cast<double>(len)));
      arr = nfds == 0 ? static_cast<napi_value>(env.Undefined()) : static_cast<napi_value>(FdArray(env, fds, nfds));
      from = SenderAddress(env, sender);
      if (sender.has_cred) {
        Napi::Object c = Napi::Object::New(env);
        c.Set("pid", Napi::Number::New(env, sender.pid));
        c.Set("uid", Napi::Number::New(env, sender.uid));
        c.Set("gid", Napi::Number::New(env, sender.gid));
        cred = c;
      } else {
        cred = env.Undefined();
      }
    } catch (const Napi::Error& e) {
      ReportException(e);
      return;
    }
    KeepReceived(fds, nfds);
    if (Emit(on_message_, {env.Null(), buf, arr, from, cred})) {
      owned.release();
    } else {
      ClaimFromJs(env, fds, nfds);
    }
  }

  // The sender's bound name, exactly: a string when its bytes are UTF-8
  // (which a JavaScript string gives back byte for byte), else a Buffer of
  // them, never a lossy decoding that names another socket. A path that is
  // not absolute is the name the sender bound relative to its own working
  // directory, which the kernel does not report (unix_bind keeps sun_path as
  // given): { relative: name }, a form sendTo refuses, never a path that
  // this process would resolve against its own directory to another socket.
  static napi_value SenderAddress(Napi::Env env, const ScmSender& sender) {
    const size_t base = offsetof(struct sockaddr_un, sun_path);
    // An unbound sender: the kernel gives just the family (unix_copy_addr).
    if (sender.addr_len <= base) return env.Null();
    size_t n = sender.addr_len - base;
    if (n > sizeof(sender.addr.sun_path)) n = sizeof(sender.addr.sun_path);
    const char* p = sender.addr.sun_path;
    if (p[0] == '\0') {
      Napi::Object o = Napi::Object::New(env);
      o.Set("abstract", NameValue(env, p + 1, n - 1));
      return o;
    }
    size_t len = strnlen(p, n);
    if (p[0] == '/') return NameValue(env, p, len);
    Napi::Object o = Napi::Object::New(env);
    o.Set("relative", NameValue(env, p, len));
    return o;
  }

  static napi_value NameValue(Napi::Env env, const char* p, size_t n) {
    if (IsUtf8(reinterpret_cast<const unsigned char*>(p), n)) return Napi::String::New(env, p, n);
    return Napi::Buffer<char>::Copy(env, p, n);
  }

  // Well-formed UTF-8 (RFC 3629): no overlong form, no surrogate, nothing
  // above U+10FFFF, no truncated sequence.
  static bool IsUtf8(const unsigned char* s, size_t n) {
    size_t i = 0;
    while (i < n) {
      unsigned char c = s[i];
      size_t more;
      unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range
      if (c < 0x80) {
        i++;
        continue;
      } else if (c >= 0xC2 && c <= 0xDF) {
        more = 1;
      } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
      } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
      } else {
        return false;
      }
      if (n - i <= more) return false;
      if (s[i + 1] < lo || s[i + 1] > hi) return false;
      for (size_t k = 2; k <= more; k++) {
        if ((s[i + k] & 0xC0) != 0x80) return false;
      }
      i += more + 1;
    }
    return true;
  }

  void OnReceiveError(const RecvResult& r, const char* data, size_t len) override {
    FlushOwnBatched();  // its messages come before what ends them
    Napi::Env env = Env();
    if (on_message_.IsEmpty() || !CanCallIntoJs()) return;
    Napi::HandleScope scope(env);
    napi_value err;
    try {
      err = ReceiveError(env, r, "recvmsg", data, len);
    } catch (const Napi::Error& e) {
      ReportException(e);
      return;
    }
    Emit(on_message_, {err});
  }

  void OnAccept(int fd, int err) override {
    // Ours until JS has it; else closed as the listener's (its queue may
    // hold what its client sent: UnixSocket::CloseAccepted).
    UnclaimedConnection owned(this, fd);
    Napi::Env env = Env();
    if (on_accept_.IsEmpty() || !CanCallIntoJs()) return;
    Napi::HandleScope scope(env);
    if (fd < 0) {
      napi_value error;
      try {
        error = SystemError(env, err, "accept4");
      } catch (const Napi::Error& e) {
        ReportException(e);
        return;
      }
      Emit(on_accept_, {error});
    } else {
      // Accepted on a listening socket of ours, it is registered; else kept
      // until a Socket takes it (KeepForJs).
      if (!FdIsOwned(fd)) KeepForJs(env, &fd, 1);
      if (Emit(on_accept_, {env.Null(), Napi::Number::New(env, fd)})) {
        owned.release();
      } else {
        ClaimFromJs(env, &fd, 1);
      }
    }
  }

  void OnSendComplete(uint32_t id, int err) override {
    auto it = send_callbacks_.find(id);
    if (it == send_callbacks_.end()) return;
    PendingSend p = std::move(it->second);
    send_callbacks_.erase(it);
    if (p.fn.IsEmpty() || !CanCallIntoJs()) return;
    Napi::FunctionReference& fn = p.fn;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    napi_value arg;
    try {
      arg = err == 0 ? env.Null() : SystemError(env, err, "sendmsg");
    } catch (const Napi::Error& e) {
      ReportException(e);
      return;
    }
    napi_value tag = TagValue(env, p);
    if (closing_) {
      // Inside close(): called from JS already, so a plain call suffices.
      try {
        fn.Call({arg, tag});
      } catch (const Napi::Error& e) {
        ReportException(e);
      }
    } else {
      Emit(fn, {arg, tag});
    }
  }

  MessageBatch* Batch() {
    InstanceData* data = Data(Env());
    return data != nullptr ? data->batch : nullptr;
  }

  // A batched socket's message waits in the environment's batch (its fds
  // with it) and reading stops for this turn: its next message is read
  // once this one and its microtasks have run. False when there is no
  // batch, or the socket closed meanwhile (the caller closes the fds).
  bool TakeIntoBatch(const char* data, size_t len, const int* fds, size_t nfds) {
    MessageBatch* batch = Batch();
    if (batch == nullptr) return false;
    // One that waits already (taken outside the loop's read): handled first.
    if (batch->Holds(this)) batch->Flush();
    if (core_ == nullptr || on_message_.IsEmpty()) return false;
    batch->Add(this, data, len, fds, nfds, core_->Discard(),
               !core_->receives_own(), core_->read_budget());
    core_->EndReadTurn();
    return true;
  }

  void FlushOwnBatched() {
    MessageBatch* batch = batched_ ? Batch() : nullptr;
    if (batch != nullptr && batch->Holds(this)) batch->Flush();
  }

  napi_value BatchHandler() override { return on_message_.IsEmpty() ? nullptr : static_cast<napi_value>(on_message_.Value()); }

  // fds[0..n), a peer's that reach nobody, to the background closer: as
  // the socket's (UnixSocket::CloseInBackground) while it is open; once it
  // is closed, as the owner it had, the ticket kept in late_tickets_
  // (backgroundCloseTickets). Asked when they are handed over, never of a
  // socket looked up before: JS may have closed it meanwhile.
  uint64_t CloseUnclaimed(const int* fds, size_t n) {
    if (core_ != nullptr) return core_->CloseInBackground(fds, n);
    uint64_t ticket = FdCloseInBackground(fds, n, closed_owner_, /*held_for_peer=*/true);
    if (ticket != 0) late_tickets_.push_back(ticket);
    TrimLateTickets();
    return ticket;
  }
  // Amortized, as UnixSocket::RememberTicket: the done tickets go once the
  // list has doubled since the last look, so a closed socket that goes on
  // handing fds over keeps only those not done, each looked at a bounded
  // number of times.
  void TrimLateTickets() {
    if (late_tickets_.size() < 2 * late_kept_ + 16) return;
    FdDropDoneTickets(&late_tickets_);
    late_kept_ = late_tickets_.size();
  }
  // A connection this listening socket accepted that nobody takes, likewise
  // (UnixSocket::CloseAccepted; ScmCloseConnection once it is closed).
  void CloseUnclaimedConnection(int fd) {
    if (core_ != nullptr) {
      core_->CloseAccepted(fd);
      return;
    }
    ScmCloseConnection(fd, closed_type_, FdIsOwned(fd), /*oob_inline=*/false, closed_owner_, &late_tickets_);
    TrimLateTickets();
  }

  // A message's fds that reach nobody (JS cannot run: the environment is
  // going away) unless released: to the background closer, never closed
  // on this thread. They come from a peer, and the last close of one can
  // block (a lingering TCP socket).
  class Unclaimed {
   public:
    Unclaimed(SocketWrap* wrap, const int* fds, size_t n) : wrap_(wrap), fds_(fds), n_(n) {}
    ~Unclaimed() {
      if (n_ > 0) wrap_->CloseUnclaimed(fds_, n_);
    }
    Unclaimed(const Unclaimed&) = delete;
    Unclaimed& operator=(const Unclaimed&) = delete;
    void release() { n_ = 0; }

   private:
    SocketWrap* wrap_;
    const int* fds_;
    size_t n_;
  };

  // An accepted connection that reaches nobody, likewise.
  class UnclaimedConnection {
   public:
    UnclaimedConnection(SocketWrap* wrap, int fd) : wrap_(wrap), fd_(fd) {}
    ~UnclaimedConnection() {
      if (fd_ >= 0) wrap_->CloseUnclaimedConnection(fd_);
    }
    UnclaimedConnection(const UnclaimedConnection&) = delete;
    UnclaimedConnection& operator=(const UnclaimedConnection&) = delete;
    void release() { fd_ = -1; }

   private:
    SocketWrap* wrap_;
    int fd_;
  };

  UnixSocket* core_ = nullptr;
  struct BoundFileId {
    std::string path;
    dev_t dev;
    ino_t ino;
  };
  std::optional<BoundFileId> bound_file_;  // boundFile's
  // Once closed: the owner and type it had, and the tickets of what was
  // handed to the closer after its close (CloseUnclaimed), not yet done.
  uint64_t closed_owner_ = 0;
  int closed_type_ = 0;
  size_t late_kept_ = 0;  // late_tickets_.size() after the last drop (TrimLateTickets)
  bool closed_lost_ = false;  // the socket was found closed behind our back at its close
  std::vector<uint64_t> late_tickets_;
  bool released_ = false;
  bool closing_ = false;
  bool batched_ = false;
  std::vector<int> scratch_fds_;
  Napi::FunctionReference on_message_;
  Napi::FunctionReference on_accept_;

  std::unordered_map<uint32_t, PendingSend> send_callbacks_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
  Napi::Reference<Napi::ArrayBuffer> buffer_ref_;
  bool reuse_buffer_ = false;
};

// socketsAlive() -> socket objects not yet garbage collected (open or closed).
Napi::Value SocketsAlive(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(g_sockets_alive.load()));
}

UnixSocket* SocketCoreOf(Napi::Env env, Napi::Value value) { return SocketWrap::CoreOf(env, value); }

void DetachSocket(SocketWrap* s, void (*on_freed)(void*), void* arg) { s->Detach(on_freed, arg); }

void ExportSocket(Napi::Env env, Napi::Object exports) {
  Napi::Function socket = SocketWrap::Define(env);
  Data(env)->socket_ctor = Napi::Persistent(socket);
  exports.Set("Socket", socket);
  exports.Set("socketsAlive", Napi::Function::New<SocketsAlive>(env, "socketsAlive"));
}

}  // namespace fdbridge
