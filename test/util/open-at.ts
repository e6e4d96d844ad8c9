/**
 * Test utility: a file the program opens at a given fd number. The same
 * function as the command fixtures' (test/attack/fixtures/fd-files.js, plain
 * JavaScript that a command's thread or process loads), typed here.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fixture = require('../attack/fixtures/fd-files.js') as { openAt(path: string, fd: number): number };

/** Opens `path` until the kernel gives it `fd` (the lowest free number); the others are closed. Returns `fd`. */
export const openAt: (path: string, fd: number) => number = fixture.openAt;
