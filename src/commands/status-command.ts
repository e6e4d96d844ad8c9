/**
 * Every helper daemon serves `status`: its clients, the fds they hold, its
 * limits and how often each was hit (`fdbridge helper --status`). It is
 * served to allowed clients only, like every command, and a client of
 * another uid than the daemon's (root excepted) sees only its own uid's
 * clients beside the totals (HelperDaemon.status).
 */
import type { CommandContext, ModuleCommandSpec } from '../command';
import { distPath } from '../paths';

export class StatusCommand {
  readonly #daemonId: number;
  readonly #context: CommandContext;

  constructor(context: CommandContext, daemonId: number) {
    this.#context = context;
    this.#daemonId = daemonId;
  }

  status(): unknown {
    const daemons = (globalThis as Record<symbol, unknown>)[HELPER_DAEMONS] as Map<number, { status(viewer?: { uid: number }): unknown }> | undefined;
    const daemon = daemons?.get(this.#daemonId);
    if (!daemon) throw new Error(`no helper daemon ${this.#daemonId} in this process`);
    // A helper daemon always knows its client's credentials (SO_PEERCRED);
    // without them nobody is asking from outside and nothing is hidden.
    const peer = this.#context.peer;
    return daemon.status(peer === undefined ? undefined : { uid: peer.uid });
  }
}

/** Where helper daemons register themselves (src/transports/helper-daemon.ts), by id. */
export const HELPER_DAEMONS = Symbol.for('fdbridge.helper-daemons');

/** The daemon adds its own id as the argument. */
export const STATUS_COMMAND: ModuleCommandSpec = { name: 'status', module: distPath('src/commands/status-command.js'), export: 'StatusCommand' };
