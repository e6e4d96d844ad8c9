// A worker thread's wake-up for the waits it makes on itself
// (UnixSocket::WaitOnThread, behind dupFileDescriptorSync). Plain POSIX, no
// Node-API.
//
// worker.terminate() stops a thread's JavaScript (V8's TerminateExecution)
// and its event loop, but a thread blocked in a system call inside a native
// call is not interrupted: Node joins it only once the call returns, so the
// caller's terminate() (and a process exit, which stops and joins every
// worker) waited out the whole timeout. So each environment of a worker
// thread is registered here by its Node threadId, and a thread that asks
// for it (its first wait) gets an eventfd, which its waits poll beside their
// socket. WakeThread, called by the thread that terminates it (the
// JavaScript wrapper of Worker.prototype.terminate, src/terminate-wake.ts),
// marks the thread woken and makes the eventfd readable: for good, never
// drained, so every wait of that thread from then on ends at once. Node
// never gives a threadId twice in a process, so a mark can never reach
// another thread.
//
// The registry's lock is held across each write to an eventfd and across
// its close (the environment's end, WakeUnregisterThread): a write never
// meets a number that was closed and reused. An eventfd that the program
// closed behind fdbridge's back (its number may hold another file now) is
// checked before each write (FdStillHeld with its file), and let go of
// without a close.
#ifndef FDBRIDGE_THREAD_WAKE_H_
#define FDBRIDGE_THREAD_WAKE_H_

#include <stdint.h>

namespace fdbridge {

// The calling thread runs the environment of Node's worker thread
// `thread_id` (non-zero) from now on: registered, not woken. Called once per
// environment, on its thread, before any of its waits.
void WakeRegisterThread(uint64_t thread_id);
// The environment of `thread_id` ends (its teardown, on its thread): it
// leaves the registry and its eventfd, if it had one, is closed.
void WakeUnregisterThread(uint64_t thread_id);
// Whether the calling thread is registered (a worker's): its waits must
// stay in poll(2), where the wake-up can end them.
bool WakeThisThreadRegistered();
// The calling thread's eventfd (readable once the thread is woken), made at
// the first call; -1 when the thread is not registered or none could be
// made (EMFILE, ENOMEM: that wait is not woken, and the next tries again).
int WakeFdOfThisThread();
// For a wait whose poll found the calling thread's eventfd ready (or
// POLLNVAL): true when the thread is woken. Otherwise the number was not
// ready for a wake: drained if it is still our eventfd (someone wrote to it
// by number), else (closed behind fdbridge's back) let go of without a
// close, and the next WakeFdOfThisThread makes another.
bool WakeThisThreadWoken();
// Wakes `thread_id`'s waits, now and from now on: false when no such thread
// is registered (it has not loaded the addon, or has ended).
bool WakeThread(uint64_t thread_id);
// WakeThread of every registered thread (the process is exiting: Node stops
// and joins every worker).
void WakeAllThreads();

}  // namespace fdbridge

#endif  // FDBRIDGE_THREAD_WAKE_H_
