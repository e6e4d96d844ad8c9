/** Test helpers for socket names: how messages show them, and what each call that takes one does with it. */
import { DatagramSocket, UnixServer, UnixSocket, type SocketAddress } from '../../src';
import { closeFds } from '../../src/fd';

/** What `f` throws, or undefined. */
export function errorOf(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** A name of bytes as messages give it: printable ASCII but the backslash as itself, every other byte \xHH. */
export function escaped(bytes: Uint8Array): string {
  return [...bytes].map((b) => (b >= 0x20 && b <= 0x7e && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
}

/**
 * What each entry point that takes a name does with `address`, in order
 * DatagramSocket.bind, UnixServer.listen, sendTo (from `sender`, with `fd`)
 * and UnixSocket.connect: its error, or undefined (what it made is closed).
 */
async function refusals(address: SocketAddress, sender: DatagramSocket, fd: number): Promise<unknown[]> {
  return [
    errorOf(() => DatagramSocket.bind(address).close()),
    errorOf(() => UnixServer.listen(address, { kind: 'seqpacket' }).close()),
    await sender.sendTo(address, Buffer.from('x'), [fd]).then(
      () => undefined,
      (e: unknown) => e,
    ),
    await UnixSocket.connect(address, { kind: 'dgram' }).then(
      (s) => s.close(),
      (e: unknown) => e,
    ),
  ];
}

/** Every entry point that takes a name refuses `address` with a TypeError of `message`. */
export async function expectRefusedEverywhere(address: SocketAddress, sender: DatagramSocket, fd: number, message: string): Promise<void> {
  for (const e of await refusals(address, sender, fd)) {
    expect(e).toBeInstanceOf(TypeError);
    expect((e as Error).message).toBe(message);
  }
}

/** Nothing reached `receiver` before now: the first datagram it gets is a marker `sender` sends it now. */
export async function expectNothingBefore(sender: DatagramSocket, receiver: DatagramSocket): Promise<void> {
  await sender.sendTo(receiver.address as SocketAddress, Buffer.from('marker'));
  const got = await receiver.receive();
  closeFds(got.fds);
  expect([got.data.toString(), got.fds.length]).toEqual(['marker', 0]);
}
