#!/usr/bin/env bash
# Runs a command and checks its exit code and that stdout+stderr contain a text.
# usage: expect.sh CODE TEXT -- COMMAND...
set -u
code="$1"; text="$2"; shift 3
out="$("$@" 2>&1)"; rc=$?
if [[ "$rc" != "$code" ]]; then
  printf 'expected exit %s, got %s from: %s\n%s\n' "$code" "$rc" "$*" "$out"; exit 1
fi
if [[ "$out" != *"$text"* ]]; then
  printf 'output of %s lacks:\n  %s\ngot:\n%s\n' "$*" "$text" "$out"; exit 1
fi
# Errors are one line.
if [[ "$code" != 0 && $(printf '%s\n' "$out" | wc -l) != 1 ]]; then
  printf 'error output is not one line:\n%s\n' "$out"; exit 1
fi
echo "ok: $*"
