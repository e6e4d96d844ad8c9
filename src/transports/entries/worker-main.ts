/**
 * The worker transport's far side: hosts one command in this worker thread.
 * workerData: WorkerData (../worker.ts).
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';

import { CommandHost } from '../../command';
import { describeError } from '../../errors';
import { argsFromJson, resultToJson } from '../../json-value';
import { native } from '../../native';
import { SharedFdLedger } from '../shared-ledger';
import type { ClientToWorker, WorkerData, WorkerToClient } from '../worker';

if (!parentPort) throw new Error('worker-main must run in a worker thread');
const port = parentPort;
const data = workerData as WorkerData;
const reads = new Int32Array(data.reads);
const post = (m: WorkerToClient): void => port.postMessage(m);

// This thread's event loop opened its fds (epoll, io_uring, signal pipe,
// eventfd) as the thread started, at the lowest free numbers of the shared
// fd table, where a number the client's caller closed and still names may
// be; they cannot be moved (libuv keeps them), so they are registered as the
// library's before the client hears that the connection is ready, and
// refused (EBADF) if a caller names one. Until now the client's loop start
// refused any number that could be one of them; it ends here, as they are
// registered. They leave the registry as this thread exits, once libuv has
// closed them.
if (data.startHold !== undefined) {
  const flags = new Int32Array(data.startHold);
  Atomics.store(flags, 0, 1);
  Atomics.notify(flags, 0);
  Atomics.wait(flags, 1, 0);
}
// The loop opens some fds lazily and keeps them (libuv's EMFILE reserve with
// its first pipe or socket handle, the inotify fd with its first watch), at
// the lowest free number then; opened now, while the loop start still
// refuses every number they could take, they are registered with the rest.
native.warmLoop();
if (native.ownLoopFds(data.loopStart) < 0) {
  // One of them opened at the number of a libuv stream of the library's
  // whose fd the program closed behind its back as this thread started:
  // the stream's close, by number, would close it under this loop. The
  // thread ends (nothing else keeps it alive), its loop's fds closed with
  // it, and the client starts another.
  post({ type: 'restart' });
} else {
  serve();
}

/** Hosts the command: 'ready' (or 'failed'), then the client's calls and its close. */
function serve(): void {
  let host: CommandHost | undefined;
  try {
    host = new CommandHost(data.command, 'worker', SharedFdLedger.attach(data.ledger, data.ledgerOwner));
    post({ type: 'ready', threadId });
  } catch (err) {
    post({ type: 'failed', error: describeError(err) });
  }

  port.on('message', (m: ClientToWorker) => {
    if (!host) return;
    if (m.type === 'call') {
      // Read: the client's send queue no longer holds it.
      Atomics.add(reads, 0, 1);
      // JSON both ways, as over a socket: a result JSON cannot carry (a
      // BigInt, a cycle), or past MAX_CALL_JSON_BYTES, is the call's error.
      host
        .call(m.method, argsFromJson(m.callJson))
        .then(resultToJson)
        .then(
          (json) => post({ type: 'result', id: m.id, json }),
          (err: unknown) => post({ type: 'error', id: m.id, error: describeError(err) }),
        );
    } else if (m.type === 'close') {
      host
        .close()
        .catch(() => undefined)
        .finally(() => {
          post({ type: 'closed' });
          // End the thread even if the command left timers or handles behind.
          process.exit(0);
        });
    }
  });
}
