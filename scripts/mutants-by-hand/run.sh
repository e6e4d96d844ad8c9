#!/usr/bin/env bash
# Stryker's mutants of some lines, applied by hand: each written into the source and into dist/
# (apply.mjs), one at a time, and the given jest arguments run against it (nice -n 10); then the
# file is checked out again and its dist/ module put back, also when the run is interrupted or
# fails (trap on EXIT, INT, TERM). One line per mutant into <log>, as jest's JSON result says:
#   KILLED    jest ran and a test failed on an assertion or error other than jest's test timeout
#   TIMEOUT   the only failures are jest's per-test timeout, or the whole run passed MUTANT_TIMEOUT
#             seconds (default 900; an endless loop) and was killed
#   SURVIVED  jest ran tests and all passed
#   ERROR     the mutant could not be applied, or jest did not run the tests (a suite failed to
#             load: a mutant the transpiler or the module's loading refuses; no tests; no result)
#   IGNORED   marked `// Stryker disable`
#   scripts/mutants-by-hand/run.sh <file> <from>-<to> <log> <all|"i j ..."> -- <jest arguments>
# Run from the repository's root, after `npm run build`, with <file> committed (it is checked out
# after each mutant). A mutant TypeScript would refuse is run too: check a survivor with tsc.
# MUTANT_JEST replaces the jest command (the script's own test gives a fake one).
set -u
file=$1 range=$2 log=$3 which=$4
shift 5
here=$(dirname "$0")
jest=${MUTANT_JEST:-node node_modules/jest/bin/jest.js}
limit=${MUTANT_TIMEOUT:-900}
git diff --quiet -- "$file" || { echo "$file has changes: commit them first" >&2; exit 1; }
dist=$(node -e "const p=require('path');const ts=require('typescript');const {options:o}=ts.getParsedCommandLineOfConfigFile('tsconfig.json',{},{...ts.sys,onUnRecoverableConfigFileDiagnostic(){}});console.log(p.join(o.outDir,p.relative(o.rootDir??'.',p.resolve(process.argv[1]))).replace(/\.ts$/,'.js'))" "$file") || exit 1
work=$(mktemp -d)
cp "$dist" "$work/saved" || exit 1
pid=
restore() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
  git checkout -q -- "$file"
  cp "$work/saved" "$dist"
}
trap 'restore; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
list=$(node "$here/list.mjs" "$file" "$range") || exit 1
indexes=$which
[ "$which" = all ] && indexes=$(echo "$list" | cut -f1)
for i in $indexes; do
  line=$(echo "$list" | awk -F'\t' -v i="$i" '$1 == i')
  if [ "$(echo "$line" | cut -f4)" = Ignored ]; then echo "IGNORED	$line" >> "$log"; continue; fi
  t0=$(date +%s)
  rm -f "$work/result.json"
  if ! node "$here/apply.mjs" "$file" "$range" "$i" > "$work/out" 2>&1; then
    status=ERROR summary="apply failed: $(tail -1 "$work/out")"
  else
    # in the background, so that a signal is handled at once (the trap kills it)
    nice -n 10 timeout -k 20 "$limit" $jest "$@" --silent --json --outputFile="$work/result.json" > "$work/out" 2>&1 &
    pid=$!; wait "$pid"; rc=$?; pid=
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      status=TIMEOUT summary="killed after ${limit}s"
    else
      read -r status summary < <(node "$here/classify.mjs" "$work/result.json")
    fi
  fi
  git checkout -q -- "$file"
  cp "$work/saved" "$dist"
  echo "$status	$(($(date +%s) - t0))s	${line:-$i}	| $summary" >> "$log"
done
