/**
 * A call's arguments and result are JSON on every transport. The socket
 * transports get that from their frames (src/protocol.ts encodes
 * `{ method, args }` and `{ value }`); a command called in this process
 * (direct) or posted to a worker makes the same round trip here, so that a
 * value arrives the same whichever transport carries it (a Date as its ISO
 * string, a function in an array as null, a BigInt or a cycle refused), and
 * no object is ever shared between the caller and the command.
 */

/** The arguments' JSON; throws (TypeError) what JSON.stringify throws, as a socket transport's send does. */
export function argsToJson(args: readonly unknown[]): string {
  return JSON.stringify({ args });
}

export function argsFromJson(json: string): unknown[] {
  return (JSON.parse(json) as { args: unknown[] }).args;
}

/** A result's JSON; throws what JSON.stringify throws (the command's side reports it as the call's error). */
export function resultToJson(value: unknown): string {
  return JSON.stringify({ value });
}

/** The value a result's JSON holds: undefined when JSON left it out (undefined, a function, a symbol). */
export function resultFromJson(json: string): unknown {
  return (JSON.parse(json) as { value?: unknown }).value;
}
