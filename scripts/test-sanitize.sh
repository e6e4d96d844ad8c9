#!/usr/bin/env bash
# Runs jest suites against the ASan + UBSan build of the addon
# (build/Sanitize/fdbridge.node, `npm run build:sanitize`), the way libuv and
# Node run theirs under sanitizers. Arguments are passed to jest (test paths,
# -t); with none, the suites that drive the native code run: test/native, the
# transport suites and a bounded model-based run (4 sequences per transport).
# Left out: test/native/unique-fd.test.ts (it builds and runs its own
# ASan/UBSan program in every run of the suite), and the CLI-log and systemd
# suites (command-line and environment handling, no native path of their own).
# `--list` alone prints the files that default run runs, one a line, and runs
# nothing: .ci/run runs the rest of the suite without the sanitizers on the
# Node that runs these under them.
#
# - Node itself is not built with ASan, so libasan must come first in the
#   process's library list: it is preloaded (LD_PRELOAD) into node, and so
#   into every process the tests start (children, helper daemons, python3);
#   FDBRIDGE_ADDON makes each of them load the sanitized addon.
# - detect_leaks=0: LeakSanitizer would report the memory Node and V8 never
#   free at exit (thousands of blocks), and its suppressions match any frame
#   of a stack, so suppressing Node's frames would suppress every leak of the
#   addon as well (all of its allocations are called from Node). fds, the
#   leaks this project is about, are checked by every test's fd-table check.
# - Each report goes to a file in a temporary directory (log_path): a
#   helper daemon's or child's stderr is often not shown by the test that
#   started it. Any report fails the run, whatever jest says.
set -euo pipefail
cd "$(dirname "$0")/.."

default=(test/native test/transports test/model --testPathIgnorePatterns unique-fd cli-log helper-systemd)
if [ "$*" = --list ]; then
  exec node node_modules/jest/bin/jest.js --listTests "${default[@]}"
fi

addon=build/Sanitize/fdbridge.node
if [ ! -f "$addon" ]; then
  echo "test-sanitize: $addon is missing; run npm run build:sanitize first" >&2
  exit 1
fi
libasan=$("${CXX:-g++}" -print-file-name=libasan.so)
if [ ! -f "$libasan" ]; then
  echo "test-sanitize: no libasan.so for ${CXX:-g++} (got '$libasan')" >&2
  exit 1
fi
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT

# ASan's allocator under every Node process (and its children) makes the
# suites several times slower: their hang guards scale with it
# (test/util/time-scale.ts), never a time a test checks.
export FDBRIDGE_TEST_TIME_SCALE=${FDBRIDGE_TEST_TIME_SCALE:-4}

if [ $# -eq 0 ]; then
  set -- "${default[@]}"
  export FDBRIDGE_MODEL_RUNS=${FDBRIDGE_MODEL_RUNS:-4}
fi

status=0
FDBRIDGE_ADDON=$addon \
LD_PRELOAD=$libasan${LD_PRELOAD:+:$LD_PRELOAD} \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$reports/asan \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan \
  node node_modules/jest/bin/jest.js --ci "$@" || status=$?

if compgen -G "$reports/*" >/dev/null; then
  for report in "$reports"/*; do
    echo "=== sanitizer report $(basename "$report")" >&2
    cat "$report" >&2
  done
  echo "test-sanitize: the sanitizers reported errors (above)" >&2
  exit 1
fi
exit $status
