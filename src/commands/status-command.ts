/**
 * Every helper daemon serves `status`: its clients, the fds they hold, its
 * limits and how often each was hit (`fdbridge helper --status`). It is
 * served to allowed clients only, like every command.
 */
import type { CommandContext, ModuleCommandSpec } from '../command';
import { distPath } from '../paths';

export class StatusCommand {
  readonly #daemonId: number;

  constructor(_context: CommandContext, daemonId: number) {
    this.#daemonId = daemonId;
  }

  status(): unknown {
    const daemons = (globalThis as Record<symbol, unknown>)[HELPER_DAEMONS] as Map<number, { status(): unknown }> | undefined;
    const daemon = daemons?.get(this.#daemonId);
    if (!daemon) throw new Error(`no helper daemon ${this.#daemonId} in this process`);
    return daemon.status();
  }
}

/** Where helper daemons register themselves (src/transports/helper-daemon.ts), by id. */
export const HELPER_DAEMONS = Symbol.for('fdbridge.helper-daemons');

/** The daemon adds its own id as the argument. */
export const STATUS_COMMAND: ModuleCommandSpec = { name: 'status', module: distPath('src/commands/status-command.js'), export: 'StatusCommand' };
