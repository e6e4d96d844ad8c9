/**
 * fdbridge's wire protocol (protocol.ts) on an open UnixSocket, both ends of
 * it: the native frame channel (native/frame_channel.h). On the client's
 * side it sends requests, keeps the one pending table and settles each
 * request from its reply in C++; on the command's side it answers DUP
 * requests in C++ into the ledger of fds given to the command. Whatever it
 * does not take reaches the socket's message handler, in order.
 */
import { releaseFrom, type FdLedger, type Released } from './command';
import { native, type NativeFrameChannel, type NativeFrameChannelCallbacks } from './native';
import { nativeSocketOf, type UnixSocket } from './socket';

export type FrameChannel = NativeFrameChannel;
export type FrameChannelCallbacks = NativeFrameChannelCallbacks;

/**
 * Layers a frame channel on `socket` (open; throws EBADF once closed). It
 * lives as long as the socket: closing the socket closes the ledger's fds
 * and rejects what is still pending (ECANCELED; a connection fails its
 * requests with failAll before that).
 */
export function openFrameChannel(socket: UnixSocket, callbacks: FrameChannelCallbacks): FrameChannel {
  return new native.FrameChannel(nativeSocketOf(socket), callbacks);
}

/** A channel's ledger, as the FdLedger a CommandHost keeps the command's fds in. */
export class ChannelLedger implements FdLedger {
  readonly #channel: FrameChannel;

  constructor(channel: FrameChannel) {
    this.#channel = channel;
  }

  add(fd: number): void {
    this.#channel.add(fd);
  }

  /** The command's now, no longer one of fdbridge's own (the native adopt disowns it): a caller may name it. */
  adopt(fd: number): boolean {
    return this.#channel.adopt(fd);
  }

  closing(fds: readonly number[]): void {
    this.#channel.forgetAdopted(fds);
  }

  /** A RELEASE (releaseFrom): takes those of `fds` held out of the channel's ledger (refunded), for the caller to close (one the command closed itself: nothing to close). */
  release(fds: readonly number[]): Released {
    return releaseFrom(fds, (fd) => {
      const released = this.#channel.release(fd);
      if (released === undefined) return undefined;
      if (released === 'released') return 'close';
      // Stryker disable next-line StringLiteral: releaseFrom tells only undefined and 'close' apart; any other value ('' too) is a held fd left alone
      return 'forget';
    });
  }

  sweep(): number {
    return this.#channel.sweep();
  }

  /**
   * The channel's sweep closes at once, or on the background closer when
   * its socket uses it (a server then waits for the socket's closes itself
   * before it answers CLOSED): nothing to wait for here.
   */
  swept(): Promise<void> {
    return Promise.resolve();
  }

  get size(): number {
    return this.#channel.givenCount;
  }
}
