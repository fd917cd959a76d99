#!/usr/bin/env bash
# `spartan merge --out` never destroys what a user has: a non-empty folder is refused (every file
# in it byte-identical afterwards), as is the base model folder, the run or a folder holding
# them; --force replaces a folder whole by renaming the finished merge into place; a merge that
# fails leaves no partial folder behind.
set -euo pipefail
spartan="$1"; fixtures="$2"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMP_NUM_THREADS=1
cli_workdir
fail() { echo "FAIL: $*"; exit 1; }
stoppable_run 3 "[checkpoint]" "every = 3"
"$spartan" train --config c.toml --set run.name=r > /dev/null
digest() { find "$@" -type f -print0 | sort -z | xargs -0 sha256sum; }

# refused CODE PATTERN ARGS...: the merge fails with CODE and one error line matching PATTERN.
refused() {
  local code=$1 pattern=$2 rc=0; shift 2
  "$spartan" merge --run runs/r "$@" > out.log 2> err.log || rc=$?
  ((rc == code)) || { cat out.log err.log; fail "exit $rc, not $code: merge $*"; }
  [[ $(wc -l < err.log) -eq 1 ]] && grep -q "^spartan: error: .*$pattern" err.log ||
    { cat err.log; fail "not one error line with '$pattern': merge $*"; }
}

mkdir mine && echo "my notes" > mine/notes.txt && cp base/config.json mine/config.json
before=$(digest mine base runs)
refused 2 "the output folder is not empty, .*mine, .*--force" --out mine
refused 2 "the output folder is the base model folder" --out base
refused 2 "the output folder contains the base model folder" --out .
refused 2 "the output folder contains the run" --out runs
refused 2 "the output folder is the run" --out runs/r
ln -s base base-link
refused 2 "the output folder is the base model folder" --out base-link
[[ "$(digest mine base runs)" == "$before" ]] || fail "a refused merge changed files"
ls -d *.spartan-partial-* 2> /dev/null && fail "a refused merge left a partial folder"

# A failing merge (a step with no checkpoint) leaves nothing.
rc=0
"$spartan" merge --run runs/r --step 2 --out new > /dev/null 2>&1 || rc=$?
((rc != 0)) || fail "merge of a missing step succeeded"
[[ ! -e new ]] || fail "a failed merge left its output"

"$spartan" merge --run runs/r --out new > /dev/null
test -f new/model.safetensors -a -f new/config.json -a -f new/adapter/adapter_config.json
"$spartan" merge --run runs/r --out mine --force > /dev/null
test -f mine/model.safetensors -a ! -e mine/notes.txt || fail "--force did not replace the folder"
cmp new/model.safetensors mine/model.safetensors || fail "--force wrote other bytes"
ls -d ./*.spartan-partial-* ./*.replaced 2> /dev/null && fail "--force left a folder behind"
mkdir empty
"$spartan" merge --run runs/r --out empty > /dev/null
test -f empty/model.safetensors || fail "merge into an empty folder"
echo "merge output: refusals, --force and failure all leave the user's files intact"
