/**
 * The addon's typed binding (src/native.ts), for the tests of the addon
 * itself: the one file outside src/ that imports src/native, and only files
 * under test/native/ import it (test/structure/native-is-private.test.ts
 * fails otherwise). Every other test reaches fds through the public fd
 * operations (src/fd.ts), the raw-socket helpers (src/testing.ts) and, for
 * what only tests observe or fake, src/test-hooks.ts.
 */
export { checkedFdLists, constants, fdList, native, type FdList } from '../../src/native';
/** The module itself, for a test that replaces fdList and checkedFdLists to compare with the element-by-element path. */
export * as nativeModule from '../../src/native';
