#!/usr/bin/env bash
# Stryker's mutants of some lines, applied by hand: each written into the source and into dist/
# (apply.mjs), one at a time, and the given jest arguments run against it (nice -n 10); then the
# file is checked out again and its dist/ module put back. One line per mutant into <log>:
# KILLED (jest failed), SURVIVED (it passed) or IGNORED (marked `// Stryker disable`).
#   scripts/mutants-by-hand/run.sh <file> <from>-<to> <log> <all|"i j ..."> -- <jest arguments>
# Run from the repository's root, after `npm run build`, with <file> committed (it is checked out
# after each mutant). A mutant TypeScript would refuse is run too: check a survivor with tsc.
set -u
file=$1 range=$2 log=$3 which=$4
shift 5
here=$(dirname "$0")
git diff --quiet -- "$file" || { echo "$file has changes: commit them first" >&2; exit 1; }
dist=$(node -e "const p=require('path');const ts=require('typescript');const {options:o}=ts.getParsedCommandLineOfConfigFile('tsconfig.json',{},{...ts.sys,onUnRecoverableConfigFileDiagnostic(){}});console.log(p.join(o.outDir,p.relative(o.rootDir??'.',p.resolve(process.argv[1]))).replace(/\.ts$/,'.js'))" "$file")
saved=$(mktemp)
cp "$dist" "$saved"
list=$(node "$here/list.mjs" "$file" "$range")
indexes=$which
[ "$which" = all ] && indexes=$(echo "$list" | cut -f1)
for i in $indexes; do
  line=$(echo "$list" | awk -F'\t' -v i="$i" '$1 == i')
  if [ "$(echo "$line" | cut -f4)" = Ignored ]; then echo "IGNORED	$line" >> "$log"; continue; fi
  node "$here/apply.mjs" "$file" "$range" "$i" > /dev/null
  t0=$(date +%s)
  out=$(nice -n 10 npx jest "$@" --silent 2>&1); rc=$?
  git checkout -q -- "$file"
  cp "$saved" "$dist"
  status=KILLED; [ $rc -eq 0 ] && status=SURVIVED
  echo "$status	$(($(date +%s) - t0))s	$line	| $(echo "$out" | grep -E '^Tests:' | tail -1)" >> "$log"
done
rm -f "$saved"
