// Messages of many sockets delivered to JavaScript in one callback per turn
// of the event loop, instead of one callback per message.
//
// A server with many clients (the helper daemon) reads one request from
// each of many connections in one turn. Each callback into JS costs a
// callback scope, async-hooks bookkeeping and a microtask checkpoint, more
// than the recvmsg that read the message; and the replies a callback sends
// at once wake each client while the others still wait, so a client that
// answers quickly is served again and again before the rest (one context
// switch per request). Here the messages read in the poll phase are kept,
// data copied and fds owned, and handed over together in the check phase
// that follows it: one callback, whose microtasks run once after all of
// them, and replies that go out together.
//
// A socket's messages keep their order; the socket stops reading for the
// turn after each one it hands over (UnixSocket::EndReadTurn), so that its
// next message is read only once the previous one's callback and microtasks
// have run, as without batching (a CLOSE is acted on before the frame
// behind it is read). Uses Node-API; the sockets are the binding's.
#ifndef FDBRIDGE_MESSAGE_BATCH_H_
#define FDBRIDGE_MESSAGE_BATCH_H_

#include <node_api.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <memory>
#include <vector>

#include "fd_budget.h"
#include "scm_rights.h"

namespace fdbridge {

class MessageBatch {
 public:
  // Whose messages an entry holds: the JS function that takes them, called
  // as handler(null, data, fds) like a socket's own message callback.
  class Target {
   public:
    virtual ~Target() = default;
    virtual napi_value BatchHandler() = 0;

   private:
    friend class MessageBatch;
    uint64_t batched_turn_ = 0;  // the turn of its last entry
  };

  // The environment's batch; `dispatcher` is the JS function each flush
  // calls: dispatcher(count, handlers, data, meta) with handlers[i] the
  // i-th message's handler, `data` an ArrayBuffer of the messages' bytes and
  // `meta` one of float64 per message: offset, length, fd count, the fds.
  // nullptr (and *err) when the loop's handles cannot be made.
  static MessageBatch* Create(napi_env env, uv_loop_t* loop, napi_value dispatcher, int* err);

  // Takes a message: its fds are owned here until the flush hands them to
  // JS, or closed as `discard` says if they never reach it. `keep_for_js`:
  // they are not registered as they arrived, so the flush leaves them in
  // the environment's keeping until the library hands them on (KeepForJs
  // in addon.h). They count in `budget`'s unsettled fds (if any) until the
  // flush (UnixSocket::SetReadBudget).
  void Add(Target* target, const char* data, size_t len, const int* fds, size_t nfds, ScmDiscard discard,
           bool keep_for_js, std::shared_ptr<FdBudget> budget = nullptr);
  // Whether a message of `target` waits to be handed over.
  bool Holds(const Target* target) const { return count_ > 0 && target->batched_turn_ == turn_; }
  // `target` goes away: its waiting messages are dropped, their fds closed.
  void Forget(Target* target);
  // Hands every waiting message to JS now (outside a flush; else they wait
  // for the next one).
  void Flush();
  void SetDispatcher(napi_value dispatcher);

  // The environment's end: waiting messages are dropped (fds closed), the
  // handles closed; the object deletes itself, then on_freed(arg) runs.
  void Close(void (*on_freed)(void*), void* arg);

 private:
  struct Entry {
    Target* target;
    size_t offset;
    size_t len;
    size_t fd_at;
    size_t nfds;
    ScmDiscard discard;
    bool keep_for_js;
    std::shared_ptr<FdBudget> budget;  // holds nfds unsettled (Add) until Settle
  };
  // The entry's fds leave the batch (handed to JS or discarded): no longer unsettled.
  static void Settle(Entry& e);

  MessageBatch(napi_env env, uv_loop_t* loop);
  ~MessageBatch();
  MessageBatch(const MessageBatch&) = delete;
  MessageBatch& operator=(const MessageBatch&) = delete;

  void Discard(const Entry& e);
  void DiscardAll();
  void Clear();
  bool Arm();
  void Disarm();
  bool CanCallIntoJs();
  static void OnCheck(uv_check_t* handle);
  static void OnIdle(uv_idle_t* handle) {}
  static void OnClosed(uv_handle_t* handle);

  napi_env env_;
  napi_ref dispatcher_ = nullptr;
  napi_ref resource_ = nullptr;
  napi_async_context async_context_ = nullptr;
  // ArrayBuffers handed to JS, reused from flush to flush (grown when short).
  napi_ref data_ab_ = nullptr;
  size_t data_cap_ = 0;
  napi_ref meta_ab_ = nullptr;
  size_t meta_cap_ = 0;

  // The check handle flushes after the poll phase; the idle handle, active
  // while anything waits, keeps that poll from blocking when a message was
  // taken outside it.
  uv_check_t check_;
  uv_idle_t idle_;
  bool armed_ = false;
  bool flushing_ = false;
  bool closed_ = false;
  int pending_closes_ = 0;
  void (*on_freed_)(void*) = nullptr;
  void* freed_arg_ = nullptr;

  uint64_t turn_ = 1;
  size_t count_ = 0;  // entries waiting, Forget's dropped ones included
  std::vector<Entry> entries_;
  std::vector<char> data_;
  std::vector<int> fds_;
};

}  // namespace fdbridge

#endif  // FDBRIDGE_MESSAGE_BATCH_H_
