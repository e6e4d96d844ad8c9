/**
 * Generated RELEASE lists for the servers' rule on numbers not held
 * (test/attack/release-not-held, remote-release-not-held): what each number
 * named is to the command's side, and the ERROR a list of them is answered
 * with.
 */

/** One number a RELEASE names and what it is: 'held' (given, not adopted, not released yet) or another kind, not held. */
export interface Named<K extends string> {
  fd: number;
  kind: K | 'held' | 'released';
}

/**
 * The numbers a RELEASE names for `kinds`: each 'held' one the next copy of
 * `held` (none left: the first of them named again, not held then, or `of`'s
 * released one), each other kind its number in `of`; with `repeat`, the
 * first held one named again at the end. Also those named that are
 * held, which the RELEASE releases, and the others, in the order named.
 */
export function releaseList<K extends string>(
  kinds: ReadonlyArray<K | 'held'>,
  held: readonly number[],
  of: Readonly<Record<K | 'released', number>>,
  repeat: boolean,
): { named: Array<Named<K>>; releasedNow: Set<number>; notHeld: number[] } {
  let nextHeld = 0;
  const named: Array<Named<K>> = [];
  for (const kind of kinds) {
    if (kind === 'held') {
      const fd = held[nextHeld++];
      named.push(fd === undefined ? { fd: held[0] ?? of.released, kind: 'released' } : { fd, kind });
    } else named.push({ fd: of[kind], kind });
  }
  const firstHeld = named.find((n) => n.kind === 'held');
  if (repeat && firstHeld) named.push({ fd: firstHeld.fd, kind: 'released' });
  return {
    named,
    releasedNow: new Set(named.filter((n) => n.kind === 'held').map((n) => n.fd)),
    notHeld: named.filter((n) => n.kind !== 'held').map((n) => n.fd),
  };
}

/** The message of the ERROR (ProtocolError) that answers a RELEASE of `named` numbers, `notHeld` of them not held and `released` held ones released. */
export function notHeldMessage(named: number, notHeld: readonly number[], released: number): string {
  return (
    `release: ${notHeld.length} of the ${named} fds named are not held for this client (${notHeld.join(', ')}): ` +
    `never given on this connection, adopted by the command, or released already; left alone, the ${released} held released`
  );
}
