// frameCodec: native/frame_format.h seen from JS.
#include "addon.h"

#include <stdlib.h>

#include <string>
#include <utility>
#include <vector>

#include "frame_format.h"

namespace fdbridge {

namespace {

// frameCodec: native/frame_format.h seen from JS, for the test that runs the
// same frame vectors through both codecs (test/native/cross-codec.test.ts).
//   decode(data, nfds) -> null (malformed) | { type, id, payload: 'none' | 'fds' | 'pins' | 'json', count, fds?, files? }
//     (files: a GETFD's, [{ dev, ino }] as decimal strings)
//   encodeFdList(type, id, fds) -> Buffer
//   encodeGetfd(id, fds, files) -> Buffer (files: [{ dev, ino }] as decimal strings)
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
  const char* payload = f.payload == frame::Payload::kFds    ? "fds"
                        : f.payload == frame::Payload::kPins ? "pins"
                        : f.payload == frame::Payload::kJson ? "json"
                                                             : "none";
  o.Set("payload", Napi::String::New(env, payload));
  o.Set("count", Napi::Number::New(env, static_cast<double>(f.count)));
  if (f.payload == frame::Payload::kFds) {
    Napi::Array fds = Napi::Array::New(env, f.count);
    for (size_t i = 0; i < f.count; i++) fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, frame::FdAt(data, i)));
    o.Set("fds", fds);
  }
  if (f.payload == frame::Payload::kPins) {
    Napi::Array fds = Napi::Array::New(env, f.count);
    Napi::Array files = Napi::Array::New(env, f.count);
    for (size_t i = 0; i < f.count; i++) {
      fds.Set(static_cast<uint32_t>(i), Napi::Number::New(env, frame::PinFdAt(data, i)));
      frame::PinnedFile file = frame::PinFileAt(data, i);
      Napi::Object e = Napi::Object::New(env);
      e.Set("dev", Napi::String::New(env, std::to_string(file.dev)));
      e.Set("ino", Napi::String::New(env, std::to_string(file.ino)));
      files.Set(static_cast<uint32_t>(i), e);
    }
    o.Set("fds", fds);
    o.Set("files", files);
  }
  return o;
}

Napi::Value FrameEncodeGetfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double idv = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(idv >= 0 && idv <= 4294967295.0 && idv == floor(idv))) throw Napi::RangeError::New(env, "id must be a u32");
  std::vector<int> fds;
  ArgFdList(info, 1, &fds);
  const char* usage = "encodeGetfd(id, fds, files): files must be an array as long as fds of { dev, ino } (decimal strings)";
  if (info.Length() < 3 || !info[2].IsArray() || info[2].As<Napi::Array>().Length() != fds.size()) throw Napi::TypeError::New(env, usage);
  Napi::Array arr = info[2].As<Napi::Array>();
  std::vector<frame::PinnedFile> files(fds.size());
  for (uint32_t i = 0; i < fds.size(); i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsObject()) throw Napi::TypeError::New(env, usage);
    std::string dev = e.As<Napi::Object>().Get("dev").ToString();
    std::string ino = e.As<Napi::Object>().Get("ino").ToString();
    char* dev_end = nullptr;
    char* ino_end = nullptr;
    files[i] = {strtoull(dev.c_str(), &dev_end, 10), strtoull(ino.c_str(), &ino_end, 10)};
    if (dev.empty() || ino.empty() || *dev_end != '\0' || *ino_end != '\0') throw Napi::TypeError::New(env, usage);
  }
  std::vector<char> out(frame::PinListBytes(fds.size()));
  size_t n = frame::EncodeGetfd(out.data(), static_cast<uint32_t>(idv), fds.data(), files.data(), fds.size());
  return Napi::Buffer<char>::Copy(env, out.data(), n);
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
  codec.Set("encodeGetfd", Napi::Function::New<FrameEncodeGetfd>(env, "encodeGetfd"));
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
