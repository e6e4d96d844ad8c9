/**
 * Each fd number's install generation (fd_ops.h, FdInstalled): every fd the
 * addon puts in the table (a dup, a pipe, a memfd, an eventfd, a socket
 * pair, a received fd) gives its number a generation never given before to
 * any number; a file the program opens itself (fs.openSync) leaves its
 * number's as it was. closeClientFds with `installs` closes a number only
 * while its generation is the one named, else a SystemError EBADF naming
 * it, nothing of the list closed. Generated sequences of makes, the
 * program's own opens and closes; the fd table as it was afterwards.
 */
import { closeSync, openSync } from 'node:fs';

import fc from 'fast-check';

import { closeFd, openFdTable } from '../../src/fd';
import { native } from './binding';
import { thrown } from './helpers';

const SEQPACKET = 5;

type Make = 'dup' | 'pipe' | 'memfd' | 'eventfd' | 'socketpair' | 'received' | 'program';
type Step = { kind: 'make'; how: Make } | { kind: 'close'; pick: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('make' as const), how: fc.constantFrom<Make>('dup', 'pipe', 'memfd', 'eventfd', 'socketpair', 'received', 'program') }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('close' as const), pick: fc.nat() }) },
);

/** Resolves once every batch of `ticket` is closed. */
function closed(ticket: number): Promise<void> {
  return new Promise((resolve) => native.afterBackgroundCloses([ticket], () => resolve()));
}

const generation = (fd: number): number => native.installGenerations([fd])[0] as number;

test('generated: every fd the addon makes gives its number a new generation, the program\'s own open none; closeClientFds closes only at the generation named', async () => {
  const before = openFdTable();
  const owner = native.newCloseOwner();
  const source = native.memfd('install-source');
  const [sender, receiver] = native.socketpair(SEQPACKET);
  await fc.assert(
    fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 30 }), async (steps) => {
      /** Each fd made (by the addon or the program) with the generation its number has had since. */
      const held = new Map<number, number>();
      let highest = Math.max(...native.installGenerations([source, sender, receiver]));
      try {
        for (const step of steps) {
          if (step.kind === 'close') {
            const fds = [...held.keys()];
            if (fds.length === 0) continue;
            const fd = fds[step.pick % fds.length] as number;
            closeSync(fd);
            held.delete(fd);
            // A close is no install: the number keeps its generation.
            continue;
          }
          if (step.how === 'program') {
            // The program's own open, at the lowest free number: no native path sees it.
            const probe = openSync('/dev/null', 'r');
            closeSync(probe);
            const earlier = generation(probe);
            const fd = openSync('/dev/null', 'r');
            expect({ fd, generation: generation(fd) }).toEqual({ fd, generation: earlier });
            held.set(fd, earlier);
            continue;
          }
          let made: number[];
          if (step.how === 'dup') made = [native.dup(source)];
          else if (step.how === 'pipe') made = native.pipe();
          else if (step.how === 'memfd') made = [native.memfd('install')];
          else if (step.how === 'eventfd') made = [native.eventfd()];
          else if (step.how === 'socketpair') made = native.socketpair(SEQPACKET);
          else {
            native.sendNow(sender, Buffer.from('fd'), [source]);
            made = (native.recvNow(receiver, 16, 4) as { fds: number[] }).fds;
          }
          const generations = native.installGenerations(made);
          // New, never given before to any number, in the order made.
          for (const g of generations) {
            expect({ step, g, above: g > highest }).toEqual({ step, g, above: true });
            highest = g;
          }
          made.forEach((fd, i) => held.set(fd, generations[i] as number));
        }
        // Each number's generation is the one its fd got (the program's: the number's before it).
        const fds = [...held.keys()];
        expect(native.installGenerations(fds)).toEqual(fds.map((fd) => held.get(fd)));
        if (fds.length > 0) {
          // Another generation named for any one of them: refused, naming it, nothing closed.
          const wrong = fds.map((fd, i) => (i === fds.length - 1 ? (held.get(fd) as number) + 1 : (held.get(fd) as number)));
          const refused = thrown(() => native.closeClientFds(fds, owner, undefined, wrong));
          expect(refused).toMatchObject({ code: 'EBADF' });
          expect((refused as Error).message).toContain(`fd ${fds[fds.length - 1]} is not the client's`);
          expect(fds.every((fd) => openFdTable().has(fd))).toBe(true);
          // Their own: closed.
          await closed(native.closeClientFds(fds, owner, undefined, fds.map((fd) => held.get(fd) as number)));
          expect(fds.filter((fd) => openFdTable().has(fd))).toEqual([]);
          held.clear();
        }
      } finally {
        for (const fd of held.keys()) closeFd(fd);
      }
    }),
    { numRuns: 60 },
  );
  for (const fd of [source, sender, receiver]) closeFd(fd);
  expect(openFdTable()).toEqual(before);
});

test('installGenerations and closeClientFds\' installs: bad arguments are TypeErrors', () => {
  const fd = native.memfd('install-args');
  try {
    expect(native.installGenerations([])).toEqual([]);
    for (const installs of [[1, 2], [-1], [0.5], ['1'], 'x']) {
      const error = thrown(() => native.closeClientFds([fd], 0, undefined, installs as unknown as number[]));
      expect({ installs, name: (error as Error).name }).toEqual({ installs, name: 'TypeError' });
    }
    expect(openFdTable().has(fd)).toBe(true);
  } finally {
    closeFd(fd);
  }
});
