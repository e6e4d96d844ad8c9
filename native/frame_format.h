// The frame format of fdbridge's wire protocol, for C++: the one C++
// definition of what src/protocol.ts defines for TypeScript (the two are
// held together by test/native/cross-codec.test.ts, which runs the same
// frame vectors, test/fixtures/frames.json, through both codecs).
//
// One frame is one SEQPACKET message:
//   offset 0  u8   type
//   offset 1  u8   flags (must be 0)
//   offset 2  u16  reserved (must be 0)
//   offset 4  u32  id (little-endian): pairs a reply with its request
//   offset 8  ...  payload: int32 fd numbers (DUP_OK, RELEASE), pins (GETFD) or UTF-8 JSON
// Only DUP frames carry fds (SCM_RIGHTS), 1..kMaxFdsPerFrame of them, and no payload.
// A GETFD lists 1..kMaxFdsPerFrame pins of kPinBytes each: the int32 fd
// number in the client, then the u64 device and u64 inode (little-endian)
// of the file the client pinned there, which the pulling side compares its
// pull with (a number the program closed and reopened on another file
// before the pull names that other file).
//
// Plain C++: no Node-API, no libuv.
#ifndef FDBRIDGE_FRAME_FORMAT_H_
#define FDBRIDGE_FRAME_FORMAT_H_

#include <stddef.h>
#include <stdint.h>

#include "scm_rights.h"

namespace fdbridge {
namespace frame {

enum Type : uint8_t {
  kHello = 1,
  kReady = 2,
  kRefused = 3,
  kDup = 4,
  kDupOk = 5,
  kCall = 6,
  kResult = 7,
  kError = 8,
  kRelease = 9,
  kClose = 10,
  kClosed = 11,
  kGetfd = 12,
};

constexpr uint32_t kProtocolVersion = 1;
constexpr size_t kHeaderBytes = 8;
// A SEQPACKET message must fit the sender's SO_SNDBUF (default 208 KiB, less
// 32 bytes of overhead) or sendmsg fails with EMSGSIZE.
constexpr size_t kMaxFrameBytes = 192 * 1024;
// The most fds one message carries (SCM_MAX_FD), and so the longest fd list.
constexpr size_t kMaxFdsPerFrame = kMaxFdsPerMessage;

struct Header {
  uint8_t type;
  uint32_t id;
};

inline uint32_t ReadU32(const char* p) {
  const unsigned char* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | (static_cast<uint32_t>(u[1]) << 8) | (static_cast<uint32_t>(u[2]) << 16) |
         (static_cast<uint32_t>(u[3]) << 24);
}

inline uint64_t ReadU64(const char* p) { return static_cast<uint64_t>(ReadU32(p)) | (static_cast<uint64_t>(ReadU32(p + 4)) << 32); }

inline void WriteU32(char* p, uint32_t v) {
  unsigned char* u = reinterpret_cast<unsigned char*>(p);
  u[0] = static_cast<unsigned char>(v & 0xff);
  u[1] = static_cast<unsigned char>((v >> 8) & 0xff);
  u[2] = static_cast<unsigned char>((v >> 16) & 0xff);
  u[3] = static_cast<unsigned char>((v >> 24) & 0xff);
}

// A header: false when `len` is shorter than one or its flags or reserved
// bytes are not zero (the frame is malformed, whatever its type).
inline bool DecodeHeader(const char* data, size_t len, Header* out) {
  if (len < kHeaderBytes || data[1] != 0 || data[2] != 0 || data[3] != 0) return false;
  out->type = static_cast<uint8_t>(data[0]);
  out->id = ReadU32(data + 4);
  return true;
}

inline void EncodeHeader(char* out, uint8_t type, uint32_t id) {
  out[0] = static_cast<char>(type);
  out[1] = out[2] = out[3] = 0;
  WriteU32(out + 4, id);
}

inline void WriteU64(char* p, uint64_t v) {
  WriteU32(p, static_cast<uint32_t>(v & 0xffffffffu));
  WriteU32(p + 4, static_cast<uint32_t>(v >> 32));
}

// A frame whose payload is a list of fd numbers (DUP_OK, RELEASE):
// well-formed when it lists 1..kMaxFdsPerFrame non-negative int32s. `n` is
// the count the payload's length gives; the numbers are read with FdAt.
inline bool FdListValid(const char* data, size_t len, size_t* n) {
  if (len < kHeaderBytes) return false;
  size_t bytes = len - kHeaderBytes;
  if (bytes == 0 || bytes % 4 != 0 || bytes / 4 > kMaxFdsPerFrame) return false;
  for (size_t off = kHeaderBytes; off < len; off += 4) {
    if (static_cast<int32_t>(ReadU32(data + off)) < 0) return false;
  }
  *n = bytes / 4;
  return true;
}

inline int32_t FdAt(const char* data, size_t i) {
  return static_cast<int32_t>(ReadU32(data + kHeaderBytes + 4 * i));
}

// Writes a fd-list frame into `out` (room for FdListBytes(n)); returns its length.
inline size_t FdListBytes(size_t n) { return kHeaderBytes + 4 * n; }
inline size_t EncodeFdList(char* out, uint8_t type, uint32_t id, const int* fds, size_t n) {
  EncodeHeader(out, type, id);
  for (size_t i = 0; i < n; i++) WriteU32(out + kHeaderBytes + 4 * i, static_cast<uint32_t>(fds[i]));
  return FdListBytes(n);
}

// A GETFD's pin: the fd number in the client and its file's device and inode.
constexpr size_t kPinBytes = 20;
struct PinnedFile {
  uint64_t dev;
  uint64_t ino;
};

// A GETFD frame: well-formed when it lists 1..kMaxFdsPerFrame pins whose
// numbers are non-negative. `n` is the count; read with PinFdAt, PinFileAt.
inline bool PinListValid(const char* data, size_t len, size_t* n) {
  if (len < kHeaderBytes) return false;
  size_t bytes = len - kHeaderBytes;
  if (bytes == 0 || bytes % kPinBytes != 0 || bytes / kPinBytes > kMaxFdsPerFrame) return false;
  for (size_t off = kHeaderBytes; off < len; off += kPinBytes) {
    if (static_cast<int32_t>(ReadU32(data + off)) < 0) return false;
  }
  *n = bytes / kPinBytes;
  return true;
}

inline int32_t PinFdAt(const char* data, size_t i) {
  return static_cast<int32_t>(ReadU32(data + kHeaderBytes + kPinBytes * i));
}

inline PinnedFile PinFileAt(const char* data, size_t i) {
  const char* p = data + kHeaderBytes + kPinBytes * i + 4;
  return {ReadU64(p), ReadU64(p + 8)};
}

inline size_t PinListBytes(size_t n) { return kHeaderBytes + kPinBytes * n; }
// Writes a GETFD of fds[0..n) pinning files[0..n) into `out` (room for PinListBytes(n)); returns its length.
inline size_t EncodeGetfd(char* out, uint32_t id, const int* fds, const PinnedFile* files, size_t n) {
  EncodeHeader(out, kGetfd, id);
  for (size_t i = 0; i < n; i++) {
    char* p = out + kHeaderBytes + kPinBytes * i;
    WriteU32(p, static_cast<uint32_t>(fds[i]));
    WriteU64(p + 4, files[i].dev);
    WriteU64(p + 12, files[i].ino);
  }
  return PinListBytes(n);
}

// What a well-formed frame carries beside its header.
enum class Payload : uint8_t {
  kNone,  // DUP (its fds travel beside it), CLOSE, CLOSED
  kFds,   // DUP_OK, RELEASE: fd numbers, read with FdAt
  kPins,  // GETFD: pins, read with PinFdAt and PinFileAt
  kJson,  // HELLO, READY, REFUSED, CALL, RESULT, ERROR: checked by whoever parses the JSON
};

struct Decoded {
  Header header;
  Payload payload;
  size_t count;  // kFds, kPins: the numbers listed; a DUP: the fds beside it
};

// Decodes one received message (`nfds` fds arrived with it) as far as C++
// reads frames: false for anything malformed, including fds beside any frame
// but a DUP (the receiver closes them).
inline bool Decode(const char* data, size_t len, size_t nfds, Decoded* out) {
  if (!DecodeHeader(data, len, &out->header)) return false;
  out->count = 0;
  switch (out->header.type) {
    case kDup:
      out->payload = Payload::kNone;
      out->count = nfds;
      return len == kHeaderBytes && nfds > 0 && nfds <= kMaxFdsPerFrame;
    case kDupOk:
    case kRelease:
      out->payload = Payload::kFds;
      return nfds == 0 && FdListValid(data, len, &out->count);
    case kGetfd:
      out->payload = Payload::kPins;
      return nfds == 0 && PinListValid(data, len, &out->count);
    case kClose:
    case kClosed:
      out->payload = Payload::kNone;
      return nfds == 0 && len == kHeaderBytes;
    case kHello:
    case kReady:
    case kRefused:
    case kCall:
    case kResult:
    case kError:
      out->payload = Payload::kJson;
      return nfds == 0;
    default:
      return false;
  }
}

}  // namespace frame
}  // namespace fdbridge

#endif  // FDBRIDGE_FRAME_FORMAT_H_
