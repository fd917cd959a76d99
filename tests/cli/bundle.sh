#!/usr/bin/env bash
# The GPU bundle (scripts/gpu-bundle) runs where the build machine's libraries are absent: a
# mount namespace hides Debian's Open MPI, HDF5, toml++, sentencepiece and the other libraries
# the bundle carries (each replaced by an empty file, so a library taken from the system fails
# loudly), the CUDA toolkit, the build tree and the source fixtures. Then spartan, two test
# binaries and a 2-rank mpirun test run from the bundle, with torch from the project's venv
# standing in for a GPU machine's PyTorch. Needs root (unshare -m); skipped (77) otherwise.
# Usage: bundle.sh ROOT BUILD
set -euo pipefail
root="$1" build="$2"
if [[ $(id -u) -ne 0 ]] || ! unshare -m true 2>/dev/null; then
  echo "skipped: needs root for a mount namespace (unshare -m)"
  exit 77
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
bundle="$scratch/bundle"
SPARTAN_BUILD_DIR="$build" "$root/scripts/gpu-bundle" "$bundle"

size=$(du -sm "$bundle" | cut -f1)
echo "bundle: $size MB"
# The device tool carries 64 MiB in all; the bundle is all that goes. 43 MB on 2026-12-01, of
# which each of its nine binaries carries its own copy of kernels/' CUDA code (a shared
# spartan_kernels library would hold it once).
((size <= 48)) || { echo "FAIL: the bundle is $size MB, over 48 MB"; exit 1; }

# What to hide: the system copy of every carried library but the two that every machine has
# (zlib; libcrypto, which the venv's Python needs to import torch), Debian's Open MPI, the CUDA
# toolkit.
hide_files=()
for lib in "$bundle"/lib/*; do
  name=$(basename "$lib")
  [[ "$name" == libz.so.1 || "$name" == libcrypto.so.3 ]] && continue
  for dir in /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/hdf5/serial /lib/x86_64-linux-gnu; do
    [[ -e "$dir/$name" ]] && hide_files+=("$(readlink -f "$dir/$name")")
  done
done
for f in /usr/lib/x86_64-linux-gnu/libmpi.so* /usr/lib/x86_64-linux-gnu/libopen-*.so* \
         /usr/bin/mpirun /usr/bin/mpiexec /usr/bin/orterun; do
  [[ -e "$f" ]] && hide_files+=("$(readlink -f "$f")")
done
hide_dirs=(/usr/lib/x86_64-linux-gnu/openmpi /usr/local/cuda "$build" "$root/tests/fixtures")
printf '%s\n' "${hide_files[@]}" | sort -u > "$scratch/hide_files"
printf '%s\n' "${hide_dirs[@]}" > "$scratch/hide_dirs"

cat > "$scratch/inside.sh" <<'INSIDE'
set -euo pipefail
scratch="$1" bundle="$2"
cd "$scratch"  # ctest starts in the build tree, which is hidden below (mpirun needs its cwd)
while read -r f; do mount --bind /dev/null "$f"; done < "$scratch/hide_files"
while read -r d; do [[ -d "$d" ]] && mount -t tmpfs none "$d"; done < "$scratch/hide_dirs"
run="$bundle/run"
fail() { echo "FAIL: $1"; exit 1; }

version=$("$run" spartan --version) || fail "spartan --version"
echo "$version"
grep -q "^MPI        Open MPI v5" <<< "$version" || fail "spartan did not load the bundle's Open MPI 5"
grep -q "^libtorch 2.11" <<< "$version" || fail "spartan did not load libtorch 2.11"
"$run" spartan config --check "$bundle/configs/demo.toml" | grep -q "valid" ||
  fail "config --check from the bundle"
"$run" test_model --gtest_brief=1 || fail "test_model from the bundle"
"$run" test_checkpoints --gtest_brief=1 || fail "test_checkpoints from the bundle"
"$run" test_kernels --gtest_brief=1 || fail "test_kernels from the bundle"
"$run" mpirun -np 2 --oversubscribe test_parallel --layout 2,1,1 --gtest_brief=1 ||
  fail "a 2-rank mpirun test from the bundle"
echo "bundle: every check passed with the system libraries hidden"
INSIDE
SPARTAN_PYTHON="$root/.venv/bin/python" unshare -m bash "$scratch/inside.sh" "$scratch" "$bundle"
