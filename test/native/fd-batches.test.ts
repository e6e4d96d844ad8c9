/**
 * The batched fd calls: closeAll (close for a list in one call, runs of
 * consecutive fds of ours with one close_range) and pidfdGetfdAll (pidfd_getfd
 * for a list, all or none, moved above the floor together). Each is checked
 * against the one-at-a-time call it stands for, on generated lists: what
 * closes, what stays open, what is counted, what the registry of our fds
 * holds afterwards. The jest setup checks the open-fd table after each test.
 */
import { closeSync, openSync } from 'node:fs';

import fc from 'fast-check';

import { fdIdentity, isFdOpen as isOpen, openFdTable } from '../../src/fd';
import { native } from './binding';
import { expectFdTable, expectSystemError, thrown } from './helpers';

/** What a list entry names: one of the fds made for the run, or something that is not an open fd. */
type Pick = { kind: 'plain' | 'pin' | 'closed'; index: number } | { kind: 'negative' };

const pick: fc.Arbitrary<Pick> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constantFrom('plain' as const, 'pin' as const, 'closed' as const), index: fc.nat(7) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'negative' as const }) },
);

describe('closeAll', () => {
  test('closes what the list names, once each, counts what was open, and leaves the registry as close one at a time would', () => {
    fc.assert(
      fc.property(fc.array(pick, { maxLength: 24 }), fc.boolean(), (picks, ascending) => {
        const before = openFdTable();
        const owned = native.ownedFdCount();
        // Eight plain fds (not ours), eight pins of them (ours, consecutive
        // above them: what a by-number request's pins look like), eight
        // numbers that are not open (made and closed above everything).
        const plain = Array.from({ length: 8 }, () => native.memfd('plain'));
        const pins = native.dupAll(plain);
        const gone = native.dupAll(plain);
        for (const fd of gone) native.close(fd);
        const named = (p: Pick): number =>
          p.kind === 'negative' ? -1 : p.kind === 'plain' ? plain[p.index]! : p.kind === 'pin' ? pins[p.index]! : gone[p.index]!;
        let list = picks.map(named);
        if (ascending) list = [...list].sort((a, b) => a - b);
        const expected = new Set(list.filter((fd) => fd >= 0 && isOpen(fd))).size;
        const listed = new Set(list);
        const pinsLeft = pins.filter((fd) => !listed.has(fd)).length;

        expect(native.closeAll(list)).toBe(expected);
        for (const fd of list) if (fd >= 0) expect(isOpen(fd)).toBe(false);
        for (const fd of [...plain, ...pins]) if (!listed.has(fd)) expect(isOpen(fd)).toBe(true);
        // The pins not listed are still ours; the listed ones are not.
        expect(native.ownedFdCount()).toBe(owned + pinsLeft);
        for (const fd of pins) expect(native.registration(fd) !== 0).toBe(!listed.has(fd));

        native.closeAll([...plain, ...pins].filter((fd) => !listed.has(fd)));
        expect(native.ownedFdCount()).toBe(owned);
        expectFdTable(before);
      }),
      { numRuns: 150 },
    );
  });

  test('a run of pins closed in one call, then the same list again: nothing more is closed', () => {
    const before = openFdTable();
    const plain = Array.from({ length: 5 }, () => native.memfd('plain'));
    const pins = native.dupAll(plain);
    expect(native.closeAll([...pins, ...pins])).toBe(5);
    expect(native.closeAll(pins)).toBe(0);
    for (const fd of pins) expect(native.registration(fd)).toBe(0);
    expect(native.closeAll(plain)).toBe(5);
    expectFdTable(before);
  });

  test('what is not an fd number is passed over, not thrown at', () => {
    const fd = native.memfd('one');
    expect(native.closeAll([Number.NaN, 1.5, -3, 2 ** 40, '4' as unknown as number, fd])).toBe(1);
    expect(isOpen(fd)).toBe(false);
    expect(() => native.closeAll(7 as unknown as number[])).toThrow(/array/);
  });
});

describe('pidfdGetfdAll', () => {
  /**
   * Pulls from this process (its own pidfd): targets are fds opened here,
   * some closed again; holes left below them, so that the pulls land on
   * numbers that are not consecutive before they move above the floor.
   */
  test('pulls every fd listed or none, each a copy of its target above the floor and ours; the low numbers it went through are free again', () => {
    const pidfd = native.pidfdOpen(process.pid, true);
    try {
      fc.assert(
        fc.property(
          fc.array(fc.boolean(), { minLength: 1, maxLength: 12 }),
          fc.array(fc.record({ index: fc.nat(11), closed: fc.boolean() }), { minLength: 1, maxLength: 40 }),
          (holes, picks) => {
            const before = openFdTable();
            const owned = native.ownedFdCount();
            // Low fds, some closed again: holes for the pulls to land in.
            const low = holes.map(() => openSync('/dev/null', 'r'));
            holes.forEach((hole, i) => hole && closeSync(low[i]!));
            const targets = Array.from({ length: 12 }, () => native.memfd('target'));
            const closedTargets = new Set<number>();
            const list = picks.map(({ index, closed }) => {
              if (closed) closedTargets.add(targets[index]!);
              return targets[index]!;
            });
            for (const fd of closedTargets) native.close(fd);
            const middle = openFdTable();
            try {
              if (closedTargets.size > 0) {
                expectSystemError(thrown(() => native.pidfdGetfdAll(pidfd, list)), 'EBADF', 'pidfd_getfd');
                expect(native.ownedFdCount()).toBe(owned);
                expectFdTable(middle);
                return;
              }
              const got = native.pidfdGetfdAll(pidfd, list);
              try {
                expect(got).toHaveLength(list.length);
                expect(new Set(got).size).toBe(got.length);
                got.forEach((fd, i) => {
                  expect(fd).toBeGreaterThanOrEqual(native.fdFloor());
                  expect(native.registration(fd)).not.toBe(0);
                  expect(fdIdentity(fd)).toEqual(fdIdentity(list[i]!));
                });
                expect(native.ownedFdCount()).toBe(owned + got.length);
                // Only the pulled copies are new: every number a pull took below the floor is free again.
                const now = openFdTable();
                for (const fd of got) now.delete(fd);
                expect([...now.keys()].sort((a, b) => a - b)).toEqual([...middle.keys()].sort((a, b) => a - b));
              } finally {
                native.closeAll(got);
              }
            } finally {
              native.closeAll(targets.filter((fd) => !closedTargets.has(fd)));
              native.closeAll(low.filter((_, i) => !holes[i]));
              expect(native.ownedFdCount()).toBe(owned);
              expectFdTable(before);
            }
          },
        ),
        { numRuns: 100 },
      );
    } finally {
      native.close(pidfd);
    }
  });

  test('more than 253 numbers: a RangeError, nothing pulled', () => {
    const pidfd = native.pidfdOpen(process.pid, true);
    try {
      const fd = native.memfd('one');
      const owned = native.ownedFdCount();
      expect(() => native.pidfdGetfdAll(pidfd, new Array<number>(254).fill(fd))).toThrow(/253/);
      expect(native.ownedFdCount()).toBe(owned);
      const got = native.pidfdGetfdAll(pidfd, new Array<number>(253).fill(fd));
      expect(new Set(got).size).toBe(253);
      expect(native.closeAll(got)).toBe(253);
      native.close(fd);
    } finally {
      native.close(pidfd);
    }
  });
});
