// The RelayPump class: native/relay_pump.h seen from JS.
#include "addon.h"

#include <memory>
#include <string>
#include <utility>

#include "fd_ops.h"
#include "relay_pump.h"

namespace fdbridge {

// ---------------------------------------------------------------------------
// RelayPump: new RelayPump(inFd, outFd, onEvent, closeOwner = 0) takes both
// fds and runs the remote transport's channel on them (native/relay_pump.h);
// its stream sockets close on the background closer as closeOwner's
// (closeTickets(); close() returns those not done). onEvent:
//   (0, type, id, payload: Buffer)  a frame that is not a pumped stream's
//   (1, stream, half)               a pumped stream's half ended (1 out, 2 in)
//   (2)                             the output's backlog drained
//   (3, err, message)               the input ended (0), failed (-errno) or broke the protocol (1),
//                                   or the output failed (-errno, message "write")
// Held strongly until close(), like a socket.

class RelayPumpWrap : public Napi::ObjectWrap<RelayPumpWrap>, public RelayPump::Delegate {
 public:
  static Napi::Function Define(Napi::Env env) {
    // The wire format's numbers as C++ has them, for the test that holds
    // them equal to remote-channel.ts's.
    Napi::Object c = Napi::Object::New(env);
    const std::pair<const char*, double> numbers[] = {
        {"HEADER_BYTES", RelayPump::kHeaderBytes},       {"DATA", RelayPump::kData},
        {"CREDIT", RelayPump::kCredit},                  {"EOF", RelayPump::kEof},
        {"STOP", RelayPump::kStop},                      {"MAX_DATA_BYTES", RelayPump::kMaxDataBytes},
        {"MAX_FRAME_BYTES", RelayPump::kMaxFrameBytes},  {"STREAM_WINDOW", static_cast<double>(RelayPump::kStreamWindow)},
        {"CONGESTED_BYTES", RelayPump::kCongestedBytes},
    };
    for (const auto& [name, value] : numbers) c.Set(name, Napi::Number::New(env, value));
    return DefineClass(env, "RelayPump",
                       {
                           StaticValue("constants", c),
                           InstanceMethod<&RelayPumpWrap::SendMethod>("send"),
                           InstanceMethod<&RelayPumpWrap::AddStream>("addStream"),
                           InstanceMethod<&RelayPumpWrap::Flush>("flush"),
                           InstanceMethod<&RelayPumpWrap::RemoveStream>("removeStream"),
                           InstanceMethod<&RelayPumpWrap::StreamBytes>("streamBytes"),
                           InstanceMethod<&RelayPumpWrap::StopInput>("stopInput"),
                           InstanceMethod<&RelayPumpWrap::EndOutput>("endOutput"),
                           InstanceMethod<&RelayPumpWrap::CloseOutput>("closeOutput"),
                           InstanceMethod<&RelayPumpWrap::CloseMethod>("close"),
                           InstanceMethod<&RelayPumpWrap::CloseTicketsMethod>("closeTickets"),
                           InstanceAccessor<&RelayPumpWrap::GetQueued>("queuedBytes"),
                           InstanceAccessor<&RelayPumpWrap::GetCongested>("congested"),
                           InstanceAccessor<&RelayPumpWrap::GetOutputOpen>("outputOpen"),
                       });
  }

  explicit RelayPumpWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RelayPumpWrap>(info) {
    Napi::Env env = info.Env();
    int in_fd = ArgFd(info, 0);
    int out_fd = ArgFd(info, 1);
    if (in_fd == out_fd) throw Napi::RangeError::New(env, "RelayPump: the input and the output must be different fds");
    if (info.Length() < 3 || !info[2].IsFunction()) throw Napi::TypeError::New(env, "RelayPump(inFd, outFd, onEvent)");
    double owner = info.Length() > 3 && !info[3].IsUndefined() ? WholeNumber(info[3]) : 0;
    if (owner < 0) throw Napi::TypeError::New(env, "RelayPump: closeOwner must be a non-negative integer");
    on_event_ = Napi::Persistent(info[2].As<Napi::Function>());
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) throw Napi::Error::New(env, "RelayPump: no event loop");
    int err = 0;
    core_ = RelayPump::Create(loop, in_fd, out_fd, this, &err);
    if (core_ == nullptr) ThrowSystem(env, err, "uv_poll_init");
    core_->SetCloseOwner(static_cast<uint64_t>(owner));
    int fds[] = {in_fd, out_fd};
    TakenByNative(env, fds, 2);  // closed by the pump (close() or this environment's cleanup hook)
    async_context_ = std::make_unique<Napi::AsyncContext>(env, "FdbridgeRelayPump", Value());
    Data(env)->pumps.insert(this);
    Ref();  // strong until close()
  }

  ~RelayPumpWrap() override {
    if (core_ != nullptr) Detach(nullptr, nullptr);
  }

  // Returns the tickets of the pump's background closes not done yet.
  std::vector<uint64_t> Detach(void (*on_freed)(void*), void* arg) {
    if (core_ == nullptr) return {};
    RelayPump* core = core_;
    core_ = nullptr;
    InstanceData* data = Data(Env());
    if (data != nullptr) data->pumps.erase(this);
    core->Close(on_freed, arg);
    // Freed only by the close's uv_close callbacks, on a later turn of the loop.
    return core->CloseTickets();
  }

 private:
  RelayPump* Core(Napi::Env env, const char* what) {
    if (core_ == nullptr) throw Napi::Error(env, SystemError(env, -EBADF, what));
    return core_;
  }

  static uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* what) {
    double v = i < info.Length() ? WholeNumber(info[i]) : -1;
    if (v < 0 || v > 4294967295.0) throw Napi::RangeError::New(info.Env(), std::string(what) + " must be a u32");
    return static_cast<uint32_t>(v);
  }

  // send(type, id, payload?)
  Napi::Value SendMethod(const Napi::CallbackInfo& info) {
    uint32_t type = ArgU32(info, 0, "type");
    if (type > 255) throw Napi::RangeError::New(info.Env(), "type must be a u8");
    uint32_t id = ArgU32(info, 1, "id");
    const char* data = nullptr;
    size_t len = 0;
    if (info.Length() > 2 && !info[2].IsUndefined()) ArgBytes(info, 2, &data, &len);
    if (len > RelayPump::kMaxFrameBytes) throw Napi::RangeError::New(info.Env(), "a frame's payload exceeds 64 MiB");
    if (core_ != nullptr) core_->Send(static_cast<uint8_t>(type), id, data, len);
    return info.Env().Undefined();
  }

  // addStream(id, fd, read, write, socket): the pump owns fd from here on.
  Napi::Value AddStream(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t id = ArgU32(info, 0, "stream");
    int fd = ArgFd(info, 1);
    bool read = info.Length() > 2 && info[2].ToBoolean();
    bool write = info.Length() > 3 && info[3].ToBoolean();
    bool socket = info.Length() > 4 && info[4].ToBoolean();
    if (!read && !write) throw Napi::RangeError::New(env, "addStream: a stream reads, writes, or both");
    CheckFdResult(env, Core(env, "uv_poll_init")->AddStream(id, fd, read, write, socket), "uv_poll_init");
    TakenByNative(env, &fd, 1);
    return env.Undefined();
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    uint32_t id = ArgU32(info, 0, "stream");
    return Napi::Boolean::New(info.Env(), core_ != nullptr && core_->Flush(id));
  }

  Napi::Value RemoveStream(const Napi::CallbackInfo& info) {
    uint32_t id = ArgU32(info, 0, "stream");
    if (core_ != nullptr) core_->RemoveStream(id);
    return info.Env().Undefined();
  }

  // streamBytes(id) -> [in, out] | undefined
  Napi::Value StreamBytes(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t id = ArgU32(info, 0, "stream");
    uint64_t in = 0, out = 0;
    if (core_ == nullptr || !core_->StreamBytes(id, &in, &out)) return env.Undefined();
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set(0u, Napi::Number::New(env, static_cast<double>(in)));
    a.Set(1u, Napi::Number::New(env, static_cast<double>(out)));
    return a;
  }

  Napi::Value StopInput(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->StopInput();
    return info.Env().Undefined();
  }
  Napi::Value EndOutput(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->EndOutput();
    return info.Env().Undefined();
  }
  Napi::Value CloseOutput(const Napi::CallbackInfo& info) {
    if (core_ != nullptr) core_->CloseOutput();
    return info.Env().Undefined();
  }

  // close() -> the tickets of the pump's background closes not done yet.
  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    std::vector<uint64_t> tickets = Detach(nullptr, nullptr);
    if (!released_) {
      released_ = true;
      // No more events: break the cycle through the callback's closure.
      on_event_.Reset();
      Unref();
    }
    return TicketArray(info.Env(), tickets);
  }
  // closeTickets() -> the same, while open (none once closed).
  Napi::Value CloseTicketsMethod(const Napi::CallbackInfo& info) {
    return TicketArray(info.Env(), core_ != nullptr ? core_->CloseTickets() : std::vector<uint64_t>{});
  }

  Napi::Value GetQueued(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_ != nullptr ? static_cast<double>(core_->queued_bytes()) : 0);
  }
  Napi::Value GetCongested(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), core_ != nullptr && core_->congested());
  }
  Napi::Value GetOutputOpen(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), core_ != nullptr && core_->output_open());
  }

  // The delegate callbacks run from uv_poll, outside any JS frame: no C++
  // exception may escape them.
  void Emit(const std::initializer_list<napi_value>& args) {
    Napi::Env env = Env();
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    napi_value result;
    if (napi_make_callback(env, *async_context_, Value(), on_event_.Value(), args.size(), args.begin(), &result) != napi_ok) {
      RaisePendingException(env);
    }
  }

  void OnFrame(uint8_t type, uint32_t id, const char* data, size_t len) override {
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    napi_value args[4];
    try {
      args[0] = Napi::Number::New(env, 0);
      args[1] = Napi::Number::New(env, type);
      args[2] = Napi::Number::New(env, id);
      args[3] = Napi::Buffer<char>::Copy(env, data != nullptr ? data : "", len);
    } catch (const Napi::Error& e) {
      if (CanCallIntoJs(*this)) napi_fatal_exception(env, e.Value());
      return;
    }
    Emit({args[0], args[1], args[2], args[3]});
  }

  void OnStreamDone(uint32_t stream, int half) override {
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Emit({Napi::Number::New(env, 1), Napi::Number::New(env, stream), Napi::Number::New(env, half)});
  }

  void OnDrained() override {
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Emit({Napi::Number::New(env, 2)});
  }

  void OnEnd(int err, const std::string& message) override {
    if (on_event_.IsEmpty() || !CanCallIntoJs(*this)) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Emit({Napi::Number::New(env, 3), Napi::Number::New(env, err), Napi::String::New(env, message)});
  }

  RelayPump* core_ = nullptr;
  bool released_ = false;
  Napi::FunctionReference on_event_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
};

void DetachRelayPump(RelayPumpWrap* p, void (*on_freed)(void*), void* arg) { p->Detach(on_freed, arg); }

void ExportRelayPump(Napi::Env env, Napi::Object exports) {
  exports.Set("RelayPump", RelayPumpWrap::Define(env));
}

}  // namespace fdbridge
