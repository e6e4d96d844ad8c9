// fdbridge's wire protocol on one socket (native/frame_format.h): both ends
// of a connection between a client and a command in another process.
//
// - The client's side: Request sends a request under a fresh id and keeps it
//   in the pending table until its reply arrives (it is settled here,
//   without the reply reaching the socket's delegate) or FailAll settles
//   every request at once.
// - The command's side: while Serve is on, a DUP request is answered at once
//   with a DUP_OK listing the received fds' numbers, and the fds join the
//   ledger of fds given to the command: theirs until adopted (Adopt), closed
//   by Sweep and when the socket closes.
//
// Whatever it does not take (HELLO, CALL, CLOSE..., a reply to no request,
// anything malformed) reaches the socket's delegate as before, in order. It
// is a filter on a UnixSocket (UnixSocket::Filter); settlements go to a
// Delegate (the binding). Plain C++ over libuv: no Node-API.
#ifndef FDBRIDGE_FRAME_CHANNEL_H_
#define FDBRIDGE_FRAME_CHANNEL_H_

#include <stddef.h>
#include <stdint.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "fd_budget.h"
#include "fd_ops.h"
#include "frame_format.h"
#include "unique_fd.h"
#include "unix_socket.h"

namespace fdbridge {

class FrameChannel : public UnixSocket::Filter {
 public:
  // One request awaiting its reply.
  struct Request {
    uint32_t id;
    // The fd numbers its DUP_OK must list; 0: it is answered with a RESULT.
    uint32_t fds;
    // The binding's: what settles it (a promise), and how it names it.
    void* token;
    uint8_t tag;
    std::string label;
  };

  class Delegate {
   public:
    virtual ~Delegate() = default;
    // A DUP_OK listing request.fds numbers (read them with frame::FdAt(data, i)).
    virtual void OnFds(Request& request, const char* data) = 0;
    // A RESULT to a request that expects one: the frame, JSON payload and all.
    virtual void OnResult(Request& request, const char* data, size_t len) = 0;
    // The reply fails the request: an ERROR frame, or a reply of the wrong
    // kind or count (then the connection cannot be trusted any more). The
    // whole frame, whatever it is.
    virtual void OnFailedReply(Request& request, const char* data, size_t len) = 0;
    // The request waited in the send queue and its send failed (-errno).
    // A peer that is gone (EPIPE, ECONNRESET) is OnBroken instead.
    virtual void OnSendFailed(Request& request, int err) = 0;
    // A queued request could not leave because the peer is gone (-errno):
    // every pending request will fail; the delegate decides with what.
    virtual void OnBroken(int err) = 0;
    // The command's side: a served DUP's fds are in the ledger, its reply not
    // yet sent (the after-receive failpoint), when SetAfterReceiveHook is on.
    virtual void AfterReceive() = 0;
    // The socket closed: the channel is detached (its ledger swept); the
    // requests it still had go to FailAll by then.
    virtual void OnDetached() = 0;
  };

  // Attaches to `socket` (which must outlive the attachment: the socket
  // detaches the channel when it closes).
  FrameChannel(UnixSocket* socket, Delegate* delegate);
  ~FrameChannel() override;
  FrameChannel(const FrameChannel&) = delete;
  FrameChannel& operator=(const FrameChannel&) = delete;

  // ---- the client's side

  // What Request sends: fds as SCM_RIGHTS beside a DUP; fd numbers in a
  // GETFD frame (the far side pulls them with pidfd_getfd), each beside its
  // file: they are pins given to the socket's closer owner (FdDupAllGiven,
  // FdGivenFiles; one that is not any more fails the send with EBADF); or a
  // frame made by the caller (CALL, RELEASE), its id written in here.
  enum class Kind { kDup, kGetfd, kFrame };

  // Sends a request and keeps it pending. kDup and kGetfd expect a DUP_OK
  // listing as many numbers as `fds`; kFrame a RESULT. Returns
  // UnixSocket::kSent or kQueued (then the request is pending), or kQueueFull
  // or -errno with nothing sent nor kept (as UnixSocket::Send). `exempt`:
  // queued past the send queue's limit (see UnixSocket::Send). kDup's fds
  // are the caller's: a number that is one of fdbridge's own is refused as
  // closed (EBADF, fd_ops.h FdRefuseOwned), unless `own` (our pins).
  int Send(Kind kind, const int* fds, size_t nfds, char* frame, size_t len, bool exempt, bool own, Request request);

  // The client's side, blocking: a one-fd DUP whose reply this thread
  // waits for in poll(2), at most `timeout_ms` (UnixSocket::WaitOnThread:
  // whatever else arrives meanwhile reaches this channel and the delegate,
  // in order, before DupSync returns). A request that times out must be
  // kept pending at once (KeepLate): its reply, should one come, settles it
  // like any other, so that the duplicate it names can be released.
  struct SyncDup {
    enum Status {
      kFd,         // a well-formed DUP_OK: `fd` is the number on the far side
      kReply,      // another frame answered it (ERROR, a malformed DUP_OK): `reply`
      kTimeout,    // no reply in time: pass this to KeepLate
      kWoken,      // the thread, a worker, is being terminated (thread_wake.h): as kTimeout
      kGone,       // the connection ended first (`err`; 0: end of file)
      kQueueFull,  // nothing sent: the send queue is at its limit
      kNotSent,    // nothing sent: `err`
    };
    Status status = kNotSent;
    int32_t fd = -1;
    int err = 0;
    size_t fds_closed = 0;  // fds that came with the reply (closed: the far side never sends any)
    std::vector<char> reply;
    uint32_t id = 0;             // kTimeout, kWoken: the request's
    uint32_t queued_send = 0;    // kTimeout, kWoken: its send's id while still queued, else 0
  };
  SyncDup DupSync(int fd, int timeout_ms);
  // The request of a DupSync that timed out (or was woken) joins the pending table as
  // `late` (no promise is made for the calls that do not time out).
  void KeepLate(const SyncDup& timed_out, Request late);

  // Takes every pending request out of the table (the caller settles them):
  // the one place where a failing connection fails its requests.
  std::vector<Request> TakeAll();

  size_t pending() const { return pending_.size(); }
  // Pending requests that expect fd numbers.
  size_t pending_dups() const { return pending_dups_; }

  // ---- the command's side

  // While on, DUP requests are answered here (see above). `max_given` caps
  // the ledger: a DUP that would take it past the cap is not answered here
  // but left to the delegate, which refuses it (a per-client quota). So is
  // one that meets a full send queue (the delegate's own reply meets it
  // too, and cuts off the peer that does not read its replies).
  // Off as well: ServePulls.
  void Serve(bool on, size_t max_given);
  // While `pidfd` is one (>= 0), GETFD requests are answered here as Serve
  // answers DUPs: the numbers listed are pulled out of the client's process
  // through `pidfd` in one step (PidfdGetfdAllHigh: close-on-exec, at or
  // above the floor, registered as fdbridge's, all or none, each checked to
  // be the file the GETFD names beside its number), kept in the
  // ledger, and the DUP_OK sent, without a call into JS. A GETFD left to
  // the delegate: one over max_given or the budget, one that meets a full
  // send queue (as a DUP), and one whose pulls fail (nothing pulled stays
  // open; the delegate's own pull fails the request with its typed error).
  // `pidfd` is borrowed: the caller keeps it open until it turns this off
  // (-1, which leaves the cap as it was, or Serve(false)).
  void ServePulls(int pidfd, size_t max_given);
  // Ledger fds are closed on the background closer thread
  // (FdCloseInBackground) from now on: they come from another process, and
  // closing one may block.
  // As the socket's owner (UnixSocket::UseBackgroundCloser), one batch per
  // sweep, whose ticket the socket remembers (BackgroundCloseTickets).
  // Each fd the ledger keeps from then on is marked as this channel's given
  // copy, with its file (FdMarkGiven: one statx each): one the command
  // closed itself, whose number another connection's fd took, is neither
  // adopted, released nor closed by this channel (FdIsGiven,
  // FdCloseGivenInBackground), and one whose number holds another file or
  // none is left alone by the closer.
  void CloseGivenInBackground(bool on);
  void SetAfterReceiveHook(bool on) { after_receive_hook_ = on; }
  // The ledger is charged to `budget` (and its parents: a helper daemon's
  // per-uid and total limits) from now on, what it holds already included;
  // a DUP that does not fit it is left to the delegate like one over
  // max_given, and the socket's reads are gated by it
  // (UnixSocket::SetReadBudget). Null: no budget.
  void ChargeTo(std::shared_ptr<FdBudget> budget);
  // Adds an fd to the ledger; once the socket is closed there is no ledger,
  // and the fd is closed at once (nobody would ever close it).
  void Add(int fd);
  // Takes `fd` out of the ledger (the adopter owns it now, and it is no longer
  // one of fdbridge's own: FdDisown, or FdDisownGiven under the given mark);
  // false if it is not there, or if its copy is no longer at the number
  // (closed by someone else: the number free, another fd of ours, or,
  // under the mark, another file), which leaves the ledger then.
  // While KeepAdoptedCharged is on it stays charged to the budget, and
  // counted against max_given (held_count), until ForgetAdopted, Sweep, or
  // its number shows it closed (see adopted_).
  bool Adopt(int fd);
  // What Release did with a number named.
  enum class Released {
    kReleased,  // taken out of the ledger and refunded: the caller closes it now
    kDropped,   // held, but the command closed the copy itself (its number no
                // longer holds it): taken out and refunded, nothing to close
    kNotHeld,   // not in the ledger: never given, adopted or released already
  };
  // Takes `fd` out of the ledger (a RELEASE): see Released.
  Released Release(int fd);
  // An fd the command adopted is still in this process, held for the
  // client, until the command closes it: while on (a helper daemon's
  // connection), Adopt keeps it charged, so that a client cannot grow the
  // fd table past its limits by having its fds adopted.
  void KeepAdoptedCharged(bool on) { keep_adopted_charged_ = on; }
  // The command is closing these fds (CommandContext.closeClientFds): those
  // it adopted while charged are refunded; returns how many were. The
  // caller hands them to the closer at once, where they count as fds a
  // peer gave that wait to be closed (FdBackgroundClosesOfPeerFds).
  size_t ForgetAdopted(const int* fds, size_t n);
  // The command closes these fds (CommandContext.closeClientFds): to the
  // background closer, as the socket's (UnixSocket::CloseClientFdsInBackground;
  // once the socket is closed, as the channel's close owner), each adopted one
  // still charged only while its number holds the file it was given with;
  // then ForgetAdopted. -EBADF and *refused the first refused (a copy the
  // ledger still holds as given, one of fdbridge's own fds now, or an
  // adopted one whose number holds another file or none: the command closed
  // it itself, or one whose number's install generation is not installs[i]:
  // FdCloseClientFdsInBackground), -EINVAL for a number named twice,
  // nothing handed over nor forgotten; else 0 and *ticket the batch's.
  int CloseClientFds(const int* fds, size_t n, const uint64_t* installs, uint64_t* ticket, int* refused);
  // Refunds the adopted fds still charged that the command closed another
  // way (not closeClientFds): those whose number is free, or holds another
  // file than it was given with (device and inode: FdFileIdentity, which
  // asks no filesystem). A number holds one file at a time, so another
  // file there means the adopted one was closed; the same file there (a
  // duplicate of it that took the number) is not told apart, and stays
  // charged. Returns how many were refunded. One statx(2) per adopted fd:
  // for the path that would refuse a DUP, not for every one.
  size_t ReclaimClosedAdopted();
  // Closes the ledger's fds and refunds the adopted ones still charged: the
  // command is closed, and what it kept of its adopted fds is its own.
  size_t Sweep();
  size_t given_count() const { return given_.size(); }
  // Charged for the client: the ledger's and the adopted ones still charged.
  size_t held_count() const { return given_.size() + adopted_.size(); }
  // DUP requests answered here so far (kept once the socket is closed).
  uint64_t served() const { return served_; }

  bool attached() const { return socket_ != nullptr; }
  // The socket, while attached (else nullptr).
  UnixSocket* socket() const { return socket_; }

  // UnixSocket::Filter
  bool FilterMessage(const char* data, size_t len, const int* fds, size_t nfds) override;
  bool FilterSendComplete(uint32_t id, int err) override;
  void OnSocketClose() override;
  // The event loop reads on after every message but two: a reply that
  // settled the last request pending when it arrived (requests that the
  // settlement itself makes, an await that sends the next one, are not
  // answered yet, or are read on the next turn), and, mostly, a DUP (or
  // GETFD) answered here: a client has one duplication in flight at a
  // time, or folds its duplications into one frame, so the read after its
  // answer mostly finds nothing. Except for a client that sends its next
  // request the moment it has the reply, the two processes on one CPU
  // (dupFileDescriptorSync in a loop): the answer's send lets it run, and
  // its next DUP is queued by the time this side goes on. So an answered
  // request reads on while the reads after answered requests have found
  // the next one more often than not lately (read_on_score_), and every
  // kReadOnProbeEvery-th request served reads on anyway (`served` a
  // multiple of it), to notice a client that starts to. Anything else (a
  // stream of frames the delegate handles) is read on as before.
  bool ReadOn() override { return read_on_; }
  void ReadOnFound(bool message) override;
  static constexpr uint64_t kReadOnProbeEvery = 16;

 private:
  bool AnswerDup(uint32_t id, const int* fds, size_t nfds);
  bool AnswerGetfd(uint32_t id, const char* data, size_t count);
  // Whether `nfds` more fds fit the ledger's cap, the budget and the send queue (AnswerDup, AnswerGetfd).
  bool Fits(size_t nfds) const;
  // `fds` (registered as fdbridge's) into the ledger, and the DUP_OK listing them.
  bool Give(uint32_t id, const int* fds, size_t nfds);
  bool Settle(uint8_t type, uint32_t id, const char* data, size_t len, size_t count);
  // Whether the client's side fails its connection on this message (`nfds`
  // fds came with it): anything but a well-formed reply of the kind and
  // count its pending request expects, or an ERROR to one. A request whose
  // id is in `answered` (replies read but not handed on yet) counts as
  // answered already: a second reply to it answers no request. Only on a
  // channel that neither serves nor pulls (a client's); the JSON of a
  // RESULT or ERROR is not looked at here.
  bool FailsClient(const char* data, size_t len, size_t nfds, const std::vector<uint32_t>& answered) const;
  Request Take(std::unordered_map<uint32_t, Request>::iterator it);
  void CloseGiven(UniqueFd fd);
  // Keeps `fd` in the ledger with `registration`: on a channel without a
  // mark its FdRegistration now, with a mark 0 (never read: StillGiven and
  // Adopt go by the mark).
  void Keep(int fd, uint64_t registration);
  // A ledger entry: the fd, and its registration as it was kept
  // (FdRegistration): on a channel without a mark, what tells this copy
  // from another fd of ours that took its number once the command closed it.
  struct Given {
    UniqueFd fd;
    uint64_t registration = 0;
  };
  // Whether the ledger's `fd` is still this channel's copy: false once the
  // command closed it and the number is another's or nobody's fd of ours.
  bool StillGiven(int fd, uint64_t registration) const {
    return given_mark_ != 0 ? FdIsGiven(fd, given_mark_) : FdRegistration(fd) == registration;
  }
  // Takes `fd` out of the ledger without closing it (not ours any more) and refunds it.
  void Drop(std::unordered_map<int, Given>::iterator it);
  class SyncWaiter;

  UnixSocket* socket_;
  Delegate* delegate_;

  uint32_t next_id_ = 1;
  std::unordered_map<uint32_t, Request> pending_;
  size_t pending_dups_ = 0;
  // Requests waiting in the socket's send queue: send id -> request id.
  std::unordered_map<uint32_t, uint32_t> queued_;
  std::vector<char> scratch_;  // a DUP header or a GETFD frame being sent
  std::vector<frame::PinnedFile> pinned_;  // a GETFD's pins' files, as sent

  bool serving_ = false;
  int pull_pidfd_ = -1;  // ServePulls: the client's pidfd (borrowed), or -1
  // AnswerGetfd's scratch: a GETFD's numbers, and the fds their pulls made.
  std::vector<int> pull_numbers_;
  std::vector<int> pulled_;
  std::vector<FdIdentity> pin_files_;  // the files a GETFD pins (either side's)
  // Give's scratch on a channel without a mark: the registrations its fds
  // are kept with; room for one message's (kMaxFdsPerFrame), made once.
  std::vector<uint64_t> kept_registrations_;
  size_t max_given_ = SIZE_MAX;
  bool close_given_in_background_ = false;
  uint64_t close_owner_ = 0;
  // The mark of this channel's given fds in the registry (FdMarkGiven), a
  // holder of copies of its own (FdNewCloseOwner): the close owner is the
  // client's uid's, shared by its connections. 0 until CloseGivenInBackground.
  uint64_t given_mark_ = 0;
  bool after_receive_hook_ = false;
  uint64_t served_ = 0;
  // The ledger: each fd owned here until adopted, swept or the socket closes.
  std::unordered_map<int, Given> given_;
  // Numbers adopted while KeepAdoptedCharged is on, each charged once,
  // until ForgetAdopted, Sweep, a new fd received or given here at the same
  // number (the kernel reuses a number only once it is closed: the command
  // closed it by other means), or ReclaimClosedAdopted finding it closed. With the
  // file each was given with (read as it was received, FdMarkGiven; for a
  // copy given unmarked, as it was adopted), `known` false when it could not
  // be read: only a free number shows that one closed.
  struct AdoptedFile {
    bool known;
    FdIdentity identity;
  };
  bool keep_adopted_charged_ = false;
  std::unordered_map<int, AdoptedFile> adopted_;
  std::shared_ptr<FdBudget> budget_;
  std::vector<char> reply_;
  bool read_on_ = true;  // ReadOn's answer for the message last filtered
  // ReadOnFound's record of the reads after answered requests: +1 for the
  // next request found, -1 for an empty socket, within [kReadOnScoreMin,
  // kReadOnScoreMax]; above 0, an answered request reads on.
  static constexpr int kReadOnScoreMin = -2;
  static constexpr int kReadOnScoreMax = 4;
  int read_on_score_ = 1;
  // The message last filtered was a request answered here.
  bool read_on_answered_ = false;
};

}  // namespace fdbridge

#endif  // FDBRIDGE_FRAME_CHANNEL_H_
