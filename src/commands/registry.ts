/**
 * The commands fdbridge itself provides, by name: what a helper daemon
 * serves without being told (`log`), and the diagnostic ones it serves only
 * when started with them (`probe`: it reads any fd number of its process,
 * lowers the fd limit and can exit, so it belongs to test daemons).
 */
import type { ModuleCommandSpec } from '../command';
import { LOG_COMMAND } from './log-command';
import { PROBE_COMMAND } from './probe-command';

export const BUILTIN_COMMANDS: Readonly<Record<string, ModuleCommandSpec>> = Object.freeze({ log: LOG_COMMAND });

export const DIAGNOSTIC_COMMANDS: Readonly<Record<string, ModuleCommandSpec>> = Object.freeze({ probe: PROBE_COMMAND });

/** A built-in or diagnostic command by name (transports that run the caller's own code accept both). */
export function builtinCommand(name: string): ModuleCommandSpec | undefined {
  return Object.hasOwn(BUILTIN_COMMANDS, name) ? BUILTIN_COMMANDS[name] : Object.hasOwn(DIAGNOSTIC_COMMANDS, name) ? DIAGNOSTIC_COMMANDS[name] : undefined;
}
