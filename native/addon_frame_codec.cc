// frameCodec: native/frame_format.h seen from JS.
#include "addon.h"

#include <utility>
#include <vector>

#include "frame_format.h"

namespace fdbridge {

namespace {

// frameCodec: native/frame_format.h seen from JS, for the test that runs the
// same frame vectors through both codecs (test/native/cross-codec.test.ts).
//   decode(data, nfds) -> null (malformed) | { type, id, payload: 'none' | 'fds' | 'json', count, fds? }
//   encodeFdList(type, id, fds) -> Buffer
//   constants: the format's numbers as C++ has them
Napi::Value FrameDecode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* data;
  size_t len;
  ArgBytes(info, 0, &data, &len);
  int nfds = ArgInt(info, 1, "nfds");
  if (nfds < 0) throw Napi::RangeError::New(env, "nfds must be >= 0");
  frame::Decoded f;
  if (!frame::Decode(data, len, static_cast<size_t>(nfds), &f)) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("type", Napi::Number::New(env, f.header.type));
  o.Set("id", Napi::Number::New(env, f.header.id));
  o.Set("payload", Napi::String::New(env, f.payload == frame::Payload::kFds ? "fds" : f.payload == frame::Payload::kJson ? "json" : "none"));
  o.Set("count", Napi::Number::New(env, static_cast<double>(f.count)));
  if (f.payload == frame::Payload::kFds) {
    Napi::Array fds = Napi::Array::New(env, f.count);
    for (size_t i = 0; i < f.count; i++) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, frame::FdAt(data, i)));
    o.Set("fds", fds);
  }
  return o;
}

Napi::Value FrameEncodeFdList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int type = ArgInt(info, 0, "type");
  double idv = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
  if (!(idv >= 0 && idv <= 4294967295.0 && idv == floor(idv))) throw Napi::RangeError::New(env, "id must be a u32");
  std::vector<int> fds;
  ArgFdList(info, 2, &fds);
  std::vector<char> out(frame::FdListBytes(fds.size()));
  size_t n = frame::EncodeFdList(out.data(), static_cast<uint8_t>(type), static_cast<uint32_t>(idv), fds.data(), fds.size());
  return Napi::Buffer<char>::Copy(env, out.data(), n);
}

Napi::Object FrameCodec(Napi::Env env) {
  Napi::Object codec = Napi::Object::New(env);
  codec.Set("decode", Napi::Function::New<FrameDecode>(env, "decode"));
  codec.Set("encodeFdList", Napi::Function::New<FrameEncodeFdList>(env, "encodeFdList"));
  Napi::Object c = Napi::Object::New(env);
  const std::pair<const char*, double> numbers[] = {
      {"HELLO", frame::kHello},   {"READY", frame::kReady},     {"REFUSED", frame::kRefused},
      {"DUP", frame::kDup},       {"DUP_OK", frame::kDupOk},    {"CALL", frame::kCall},
      {"RESULT", frame::kResult}, {"ERROR", frame::kError},     {"RELEASE", frame::kRelease},
      {"CLOSE", frame::kClose},   {"CLOSED", frame::kClosed},   {"GETFD", frame::kGetfd},
      {"PROTOCOL_VERSION", frame::kProtocolVersion},           {"HEADER_BYTES", frame::kHeaderBytes},
      {"MAX_FRAME_BYTES", frame::kMaxFrameBytes},              {"MAX_FDS_PER_FRAME", frame::kMaxFdsPerFrame},
  };
  for (const auto& [name, value] : numbers) c.Set(name, Napi::Number::New(env, value));
  codec.Set("constants", c);
  return codec;
}

}  // namespace

void ExportFrameCodec(Napi::Env env, Napi::Object exports) {
  exports.Set("frameCodec", FrameCodec(env));
}

}  // namespace fdbridge
