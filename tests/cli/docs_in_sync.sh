#!/usr/bin/env bash
# configs/README.md carries the output of `spartan config --explain`; they must not drift.
set -u
spartan="$1"; readme="$2"
diff <("$spartan" config --explain) <(sed -n '/^## Every key/,$p' "$readme" | sed '1,3d;$d') \
  && echo "ok: configs/README.md matches spartan config --explain" \
  || { echo "configs/README.md is stale: regenerate its last block from spartan config --explain"; exit 1; }
