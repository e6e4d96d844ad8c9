/**
 * A helper daemon's client names a command, never a path the daemon acts
 * on with its own credentials. The built-in log command's
 * listenForRedirects(path) binds a datagram socket at a path the client
 * gives (creating its directory): to a client of another uid
 * (--allow-uid) it is refused, or that user could make directories and
 * sockets anywhere the daemon's user may (root's here). Run as root, the
 * client as nobody.
 */
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { HelperDaemon } from '../../src';
import { DIST_SRC, isRoot, NOBODY, runAsNobody } from '../util/nobody';

const describeRoot = isRoot ? describe : describe.skip;
const ROOT_UID = process.getuid?.() ?? 0;

describeRoot('what a client of another uid makes the daemon do with a path (client: nobody)', () => {
  test('listenForRedirects from another uid makes no directory or socket as the daemon', async () => {
    // A directory only root may write (0755, root's): nobody cannot create anything in it.
    const dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-paths-'));
    chmodSync(dir, 0o755);
    const target = join(dir, 'made-by-nobody', 'redirect.sock');
    const daemon = HelperDaemon.start({ socketPath: `@fdbridge-attack-paths-${process.pid}`, allowUids: [NOBODY] });
    try {
      const p = runAsNobody(`
        const { connect, LOG_COMMAND } = require(${JSON.stringify(DIST_SRC)});
        (async () => {
          const c = await connect('helper', { command: LOG_COMMAND, socketPath: ${JSON.stringify(daemon.socketPath)}, trustPeer: { uids: [${ROOT_UID}] } });
          try {
            return { listening: await c.call('listenForRedirects', ${JSON.stringify(target)}) };
          } catch (e) {
            return { refused: e.name };
          } finally {
            await c.close();
          }
        })().then((r) => console.log(JSON.stringify({ result: r })), (e) => console.log(JSON.stringify({ result: { error: e.code ?? e.name, message: e.message } })));`);
      const { result } = await p.line<{ result: Record<string, unknown> }>('result');
      await p.exited();
      // What nobody could not do itself, the daemon must not do for it.
      expect({ result, made: existsSync(join(dir, 'made-by-nobody')) }).toEqual({ result: { refused: 'RemoteError' }, made: false });
    } finally {
      await daemon.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
