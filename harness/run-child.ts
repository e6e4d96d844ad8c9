/**
 * The row process of `fdbridge run` (harness/run-supervisor.ts): plans the
 * same rows as the run that started it, runs a RowSession, and runs the
 * rows it is sent, one at a time, answering pings between. Its messages
 * are the supervisor's ToRowProcess and FromRowProcess.
 *
 * It ends when the supervisor says so ('finish', 'stop': the row running is
 * ended as a timed-out one is, then the helper daemon is stopped), and when
 * the supervisor is gone (its IPC channel closes): the row is stopped the
 * same way, and the run's directories are removed on the way out
 * (harness/exit-cleanup.ts). Should its thread be blocked then, a thread
 * of its own does that and kills it (harness/run-child-watch.ts).
 */
import { rmSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

import { requireDistFile } from '../src/paths';
import { cleanupOnExit, onStopSignals } from './exit-cleanup';
import type { ToRowWatch } from './run-child-watch';
import { discoverScenarios, planRows, RowSession } from './runner';
import type { FromRowProcess, RowProcessInit, ToRowProcess } from './run-supervisor';
import type { ResultRow } from './types';
import { rowLabels } from './run-supervisor';

function send(m: FromRowProcess): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) resolve();
    else process.send?.(m, undefined, {}, () => resolve());
  });
}

// The supervisor stops this process: SIGINT (or SIGHUP) from a terminal
// reaches the whole process group, and Node's default would exit without
// cleaning up.
onStopSignals(() => undefined);
// The supervisor is gone (SIGKILLed): nobody waits for results any more.
// The row is stopped, the daemon too, and what the supervisor would have
// removed is removed here (on any exit from now on).
process.on('disconnect', () => {
  cleanupOnExit(() => {
    for (const dir of [rowDir, runDir]) if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });
  controller.abort(new Error('the run that started this row process is gone'));
  void end();
});

// Ends this process should the run be gone while this thread is blocked
// (harness/run-child-watch.ts). Waited for before the session opens: its
// fds (its event loop's, its pidfd) are in every baseline.
const watch = new Worker(requireDistFile('harness/run-child-watch.js'), { workerData: { runPid: process.ppid } });
watch.unref();
/** Settles once the watch has opened what it keeps open: no leak oracle baseline may be taken before. */
const watching = new Promise<void>((resolve) => {
  watch.on('message', (m: { type: 'ping' | 'watching' }) => {
    if (m.type === 'ping') watch.postMessage({ type: 'pong' } satisfies ToRowWatch);
    else resolve();
  });
  // It fails to start only if the run is gone already: then the disconnect below ends this process.
  watch.on('error', () => resolve());
});

/** Tells the watch which directories to remove should it have to end this process. */
function tellDirs(): void {
  watch.postMessage({ type: 'dirs', dirs: [rowDir, runDir].filter((d): d is string => d !== undefined) } satisfies ToRowWatch);
}

const controller = new AbortController();
let plannedRows: ReturnType<typeof planRows>['rows'] = [];
let session: RowSession | undefined;
/** The run's directory and the current row's: the supervisor's to remove, unless it is gone. */
let runDir: string | undefined;
let rowDir: string | undefined;
let opening: Promise<void> | undefined;
let current: Promise<void> = Promise.resolve();
/** The index of the last row run here: its result may still change (RowSession.run), and 'settled' says so. */
let lastIndex: number | undefined;
let ending = false;

async function open(init: RowProcessInit): Promise<void> {
  runDir = init.session.runDir;
  tellDirs();
  await watching;
  const rows = planRows(discoverScenarios(init.scenariosDir), init.plan).rows;
  const labels = rowLabels(rows);
  if (labels.join('\n') !== init.labels.join('\n')) {
    throw new Error(`the row process planned other rows than the run (${labels.length}, not ${init.labels.length}): did ${init.scenariosDir} change?`);
  }
  session = await RowSession.open({
    ...init.session,
    rows,
    signal: controller.signal,
    info: (line) => void send({ type: 'info', line }),
    onDeadline: (ms, what) => void send({ type: 'deadline', ms, what }),
  });
  plannedRows = rows;
  await send({ type: 'ready', anchors: session.anchors });
}

function peaks(): { clientPeakRss: number; helperPeakRss: number | undefined } {
  return { clientPeakRss: process.resourceUsage().maxRSS * 1024, helperPeakRss: session?.helperPeakRssBytes };
}

/** After the row running (if any): the helper daemon stopped, 'closed' sent, and the process ends. */
async function end(): Promise<void> {
  if (ending) return;
  ending = true;
  await opening?.catch(() => undefined);
  // RowSession.run never rejects; should it all the same, the process still ends.
  await current.catch(() => undefined);
  // What the last row left running did since its look is charged to it, before the daemon goes.
  const last = await session?.settle().catch(() => undefined);
  if (last !== undefined && lastIndex !== undefined) await send({ type: 'settled', index: lastIndex, result: last });
  await session?.close();
  await send({ type: 'closed', ...peaks() });
  // A scenario may have left a timer or a handle that would keep it alive.
  process.exit(process.connected ? 0 : 1);
}

process.on('message', (m: ToRowProcess) => {
  switch (m.type) {
    case 'ping':
      void send({ type: 'pong' });
      break;
    case 'init':
      opening = open(m.init).catch(async (err: unknown) => {
        await send({ type: 'failed', message: err instanceof Error ? err.message : String(err) });
        process.exit(1);
      });
      break;
    case 'row': {
      const row = plannedRows[m.index];
      const s = session;
      if (ending) break;
      if (row === undefined || s === undefined) {
        void send({ type: 'failed', message: `no row ${m.index} here` }).then(() => process.exit(1));
        break;
      }
      rowDir = m.dir;
      tellDirs();
      const earlier = lastIndex;
      lastIndex = m.index;
      const onEarlier = (result: ResultRow): void => {
        if (earlier !== undefined) void send({ type: 'settled', index: earlier, result });
      };
      const onLeftRunning = async (leftRunning: string[]): Promise<void> => {
        if (earlier !== undefined && leftRunning.length > 0) await send({ type: 'left-running', index: m.index, earlier, leftRunning });
      };
      current = s.run(row, m.dir, onEarlier, onLeftRunning, true).then(async (result) => {
        rowDir = undefined;
        tellDirs();
        // Not run: process.env could not be put back as it began. The supervisor, seeing this process end before the
        // row began, runs it in a new one.
        if (result === undefined) return;
        // Credentials the row changed and that could not be put back: no other row runs with them (the supervisor,
        // told before the result, starts a new process for the rows left).
        if (s.stateLost !== undefined) await send({ type: 'retiring', why: s.stateLost });
        await send({ type: 'result', index: m.index, result, ...peaks() });
      });
      // It ends once the result is sent (end() waits for `current`).
      void current
        .then(() => (s.stateLost !== undefined ? end() : undefined))
        .catch(async (err: unknown) => {
          // Closing the session failed: the supervisor sees this process exit without 'closed'.
          await send({ type: 'info', line: `the row process (pid ${process.pid}) could not close its session as it retired: ${err instanceof Error ? err.message : String(err)}` }).catch(() => undefined);
          process.exit(1);
        });
      break;
    }
    case 'stop':
      controller.abort(new Error(m.reason));
      void end();
      break;
    case 'finish':
      void end();
      break;
  }
});
