/**
 * A call's arguments and result are JSON on every transport. The socket
 * transports get that from their frames (src/protocol.ts carries
 * `{ method, args }` and `{ value }`); a command called in this process
 * (direct) or posted to a worker makes the same round trip here, so that a
 * value arrives the same whichever transport carries it (a Date as its ISO
 * string, a function in an array as null, a BigInt or a cycle refused), and
 * no object is ever shared between the caller and the command.
 *
 * The size of that JSON has one limit on every transport too, the tightest
 * one's: a frame of the child, helper and pidfd transports is one
 * SEQPACKET message, which must fit the socket's send buffer. Worker
 * messages and remote frames could carry more; they do not, so that a call
 * that works on one transport works on all of them.
 */
import { HEADER_BYTES, MAX_FRAME_BYTES } from './protocol';

/**
 * The most UTF-8 bytes a call's encoded arguments (the JSON of
 * `{ method, args }`) and its encoded result (the JSON of `{ value }`) may
 * have: one frame's payload.
 */
export const MAX_CALL_JSON_BYTES = MAX_FRAME_BYTES - HEADER_BYTES;

/** The `code` of the RangeError for a call's arguments or result past MAX_CALL_JSON_BYTES. */
export const CALL_TOO_LARGE = 'ERR_FDBRIDGE_CALL_TOO_LARGE';

/** `{"value":` and `}`: what a result's JSON adds to its value's. */
const RESULT_WRAPPER_BYTES = 10;

/** UTF-8 bytes of `json` plus `extra`, when that is more than the limit. */
function bytesPastLimit(json: string, extra: number): number | undefined {
  // A UTF-16 code unit is at most 3 UTF-8 bytes: most calls need no count.
  // Stryker disable next-line ConditionalExpression,EqualityOperator: a shortcut: forced false, or `<`, the bytes are counted where they need not be, with the same verdict (its forced-true and `>` mutants are killed)
  if (3 * json.length + extra <= MAX_CALL_JSON_BYTES) return undefined;
  const bytes = Buffer.byteLength(json) + extra;
  return bytes > MAX_CALL_JSON_BYTES ? bytes : undefined;
}

function callTooLarge(message: string): RangeError {
  return Object.assign(new RangeError(message), { code: CALL_TOO_LARGE });
}

/**
 * The call's JSON, `{ method, args }`. Throws, with nothing sent, what
 * JSON.stringify throws (TypeError: a BigInt, a cycle), or a RangeError
 * (code ERR_FDBRIDGE_CALL_TOO_LARGE) past MAX_CALL_JSON_BYTES.
 */
export function callToJson(method: string, args: readonly unknown[]): string {
  const json = JSON.stringify({ method, args });
  const bytes = bytesPastLimit(json, 0);
  if (bytes !== undefined) {
    throw callTooLarge(
      `${method}(): its arguments are ${bytes} bytes of JSON ({ method, args }), more than a call carries ` +
        `(MAX_CALL_JSON_BYTES, ${MAX_CALL_JSON_BYTES} bytes, on every transport); nothing was sent`,
    );
  }
  return json;
}

export function argsFromJson(json: string): unknown[] {
  return (JSON.parse(json) as { args: unknown[] }).args;
}

/**
 * The JSON of a result's value, undefined when JSON leaves it out
 * (undefined, a function, a symbol). Throws what JSON.stringify throws, or
 * a RangeError (code ERR_FDBRIDGE_CALL_TOO_LARGE) when the result's JSON,
 * `{ value }`, would be past MAX_CALL_JSON_BYTES: the command's side
 * reports either as the call's error (a RemoteError for the caller).
 */
export function valueToJson(value: unknown): string | undefined {
  const json = JSON.stringify(value) as string | undefined;
  if (json === undefined) return undefined;
  const bytes = bytesPastLimit(json, RESULT_WRAPPER_BYTES);
  if (bytes !== undefined) {
    throw callTooLarge(
      `the result is ${bytes} bytes of JSON ({ value }), more than a call's result carries ` +
        `(MAX_CALL_JSON_BYTES, ${MAX_CALL_JSON_BYTES} bytes, on every transport)`,
    );
  }
  return json;
}

/** A result's JSON, `{ value }` (`{}` for a value JSON leaves out); throws as valueToJson. */
export function resultToJson(value: unknown): string {
  const json = valueToJson(value);
  return json === undefined ? '{}' : `{"value":${json}}`;
}

/** The value a result's JSON holds: undefined when JSON left it out (undefined, a function, a symbol). */
export function resultFromJson(json: string): unknown {
  return (JSON.parse(json) as { value?: unknown }).value;
}
