#!/bin/sh
# Stryker's buildCommand, run inside its sandbox (.stryker-tmp/sandbox-*) after
# the sources are instrumented and before node_modules is linked there:
# compiles the mutated sources into the sandbox's dist/, so that child
# processes, workers, helper daemons and the CLI run the mutants too (they
# inherit __STRYKER_ACTIVE_MUTANT__ from the test process).
set -e
# The sandbox is created 0700; tests run some commands as `nobody`, which must reach dist/ and build/.
chmod o+rx .
# The project's node_modules is in the first parent that has one (the sandbox
# sits in tempDirName, one or more levels below the project).
root=$(pwd)
while [ ! -e "$root/node_modules/typescript/bin/tsc" ] && [ "$root" != / ]; do root=$(dirname "$root"); done
exec node "$root/node_modules/typescript/bin/tsc" -p tsconfig.json
