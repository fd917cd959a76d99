#!/usr/bin/env bash
# Every C++ and CUDA source of the project is as clang-format 14 (Debian 12's, which scripts/setup
# installs: another version formats some lines differently) formats it with .clang-format.
set -euo pipefail
cd "$1"
fmt=$(command -v clang-format-14 || true)
[[ -n $fmt ]] || { echo "FAIL: clang-format-14 is missing: run scripts/setup"; exit 1; }
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.cu' '*.cuh')
else  # an exported tree: the sources, not the build folders or the venv
  mapfile -t files < <(find . \( -path ./.venv -o -path './build*' -o -path ./runs \) -prune -o \
    -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print)
fi
((${#files[@]} > 0)) || { echo "FAIL: no sources found in $PWD"; exit 1; }
if ! out=$("$fmt" --dry-run --Werror "${files[@]}" 2>&1); then
  grep -o '^[^:]*:[0-9]*' <<< "$out" | sort -u -t: -k1,1 | sed 's/^/not formatted: /'
  echo "FAIL: format them with: git ls-files '*.cpp' '*.h' '*.cu' '*.cuh' | xargs clang-format-14 -i"
  exit 1
fi
echo "ok: ${#files[@]} files formatted"
