/**
 * The leak checker compares each fd number's file by (mount, inode number).
 * On ext4 (here: / and /tmp) an inode number freed by a delete is handed to
 * the next file created, so the common "replace a file" pattern -- close it,
 * unlink it, write a new file at the same path, open that -- would give the
 * same fd number, the same /proc/PID/fd name and the same (mount, inode
 * number) for a *different* file. The check holds the baseline's files
 * (FdTableHold), so the first file's inode, and its number, outlive the
 * delete until the check ends: the new file gets another number and the
 * change is reported.
 *
 * Deterministic on this machine's ext4: the new fd takes the lowest free
 * number (the one just closed), and the test first checks that the
 * filesystem does reuse a freed inode number outside a check (so a
 * filesystem that does not fails on the setting, not on the verdict).
 */
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkFdLeaks } from '../../src';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fdbridge-attack-recycled-inode-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Deletes `path`'s file and writes a new one there: whether the new one got the freed inode number. */
function recycles(path: string): boolean {
  writeFileSync(path, 'old');
  const ino = statSync(path).ino;
  unlinkSync(path);
  writeFileSync(path, 'new');
  const again = statSync(path).ino === ino;
  unlinkSync(path);
  return again;
}

test('a file deleted and recreated at its path (recycled inode number), reopened at the same fd number, is reported', async () => {
  const path = join(dir, 'state.json');
  // The setting: outside a check, this filesystem hands the freed inode
  // number to the next file (ext4 does), so only the check's hold of the
  // baseline's files can keep the two apart. A few tries: another process
  // creating a file in the same block group at that moment takes the number.
  expect([1, 2, 3, 4, 5].some(() => recycles(path))).toBe(true);
  writeFileSync(path, 'old');
  const held = openSync(path, 'r');
  const heldIno = fstatSync(held).ino;
  let reopened = -1;
  try {
    const report = await checkFdLeaks(() => {
      closeSync(held);
      unlinkSync(path); // the caller's file is gone (its inode is kept by the check's hold alone)
      writeFileSync(path, 'new');
      reopened = openSync(path, 'r');
    }, { settleMs: 0 });
    // The same number and name, another file: the held inode kept its number, so the new file has another.
    expect({ sameNumber: reopened === held, sameIno: fstatSync(reopened).ino === heldIno, content: readFileSync(reopened, 'utf8') })
      .toEqual({ sameNumber: true, sameIno: false, content: 'new' });
    // The caller's file closed, the new one left open: both at that number.
    expect({ leaks: report.leaks.map((e) => [e.fd, e.target]), closed: report.closed.map((e) => [e.fd, e.target]) })
      .toEqual({ leaks: [[held, path]], closed: [[held, path]] });
  } finally {
    closeSync(reopened >= 0 ? reopened : held);
  }
});
