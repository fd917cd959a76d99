#!/usr/bin/env bash
# Checkpoints through the executable: a run killed (SIGKILL) after a checkpoint resumes from it
# and ends with the same losses as an uninterrupted run, bit for bit on the same layout (1 rank
# and TP=2) and within fp32 rounding on another (TP=2 -> 1, PP=2 -> 1); `ckpt info` verifies
# checksums; a damaged shard, a missing shard, an edited manifest and another base model are
# clear errors naming the file.
set -euo pipefail
spartan="$1"; fixtures="$2"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
cli_workdir
qa_jsonl 80 > qa.jsonl
cat > c.toml <<TOML
[run]
name = "straight"
output_dir = "$dir/runs"
log_every = 1
$(tiny_model_toml)
[adapter]
method = "sora"
dropout = 0.0
$(qa_data_toml 128)
[optim]
lr = 3e-3
global_batch_size = 4
micro_batch_size = 2
max_steps = 8
[checkpoint]
every = 3
keep = 2
TOML
"$spartan" model init --config c.toml --out base > /dev/null

losses() { grep -o '"loss":[^,]*' "$1" | cut -d: -f2 | tail -n "${2:-100}"; }
fail() { echo "FAIL: $*"; exit 1; }
expect_error() {  # pattern, then the command
  local pattern=$1; shift
  local rc=0
  "$@" > e.log 2>&1 || rc=$?
  (( rc != 0 )) || fail "no error from: $*"
  (( rc < 128 )) || { cat e.log; fail "crashed (exit $rc): $*"; }
  grep -q "$pattern" e.log || { cat e.log; fail "expected '$pattern'"; }
}

# Runs the command with rank 0 SIGKILLing itself at a point of the run (SPARTAN_FAULT): right
# after checkpoint 3 is committed, or in the middle of saving checkpoint 6 (shards written, no
# manifest yet). The run must not succeed.
killed() {
  local fault=$1 log=$2; shift 2
  if SPARTAN_FAULT=$fault "$@" > "$log" 2>&1; then fail "the run survived $fault"; fi
}

mpi2=(mpirun --oversubscribe -np 2)
for layout in "1" "tp2"; do
  launch=("$spartan"); sets=()
  [[ $layout == tp2 ]] && launch=("${mpi2[@]}" "$spartan") && sets=(--set parallel.tp=2)
  "${launch[@]}" train --config c.toml "${sets[@]}" --set run.name=straight-$layout > s.log
  name=killed-$layout
  killed kill-after-save=3 k.log "${launch[@]}" train --config c.toml "${sets[@]}" \
    --set run.name=$name
  [[ $(cat runs/$name/checkpoints/latest) == step-00000003 ]] || fail "$name: latest"
  # Killed again while saving step 6: step 3 stays the newest complete checkpoint.
  killed kill-in-save=6 k.log "${launch[@]}" train --config c.toml "${sets[@]}" \
    --set run.name=$name
  [[ $(cat runs/$name/checkpoints/latest) == step-00000003 ]] || fail "$name: latest after 6"
  grep -q "resumed from .*step-00000003 at step 3" k.log || fail "$name: second resume"
  "${launch[@]}" train --config c.toml "${sets[@]}" --set run.name=$name > r.log
  grep -q "resumed from .*step-00000003 at step 3" r.log || { cat r.log; fail "$name: no resume"; }
  diff <(losses runs/straight-$layout/metrics.jsonl 5) <(losses runs/$name/metrics.jsonl 5) \
    || fail "$name: steps 4-8 differ from the uninterrupted run"
  # Each step once in metrics.jsonl: the records after the checkpoint were dropped at resume
  # (the "resumed" records mark where each resume began).
  diff <(grep -v '"event"' runs/straight-$layout/metrics.jsonl | grep -o '"step":[0-9]*') \
       <(grep -v '"event"' runs/$name/metrics.jsonl | grep -o '"step":[0-9]*') \
    || fail "$name: metrics steps"
  cmp runs/straight-$layout/adapter/adapter_model.safetensors \
      runs/$name/adapter/adapter_model.safetensors || fail "$name: adapters differ"
  # keep = 2: steps 6 and 8 remain.
  [[ $(ls runs/$name/checkpoints | grep -c '^step-') == 2 ]] || fail "$name: keep"
done

# Another layout: TP=2 -> 1 rank, and PP=2 -> 1 rank.
close() {  # two loss lists within 1e-5 relative
  paste <(losses "$1" 5) <(losses "$2" 5) |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $2) bad = 1; n++ } END { exit (bad || n != 5) }'
}
for saved in tp pp; do
  name=moved-$saved
  killed kill-after-save=3 k.log "${mpi2[@]}" "$spartan" train --config c.toml \
    --set parallel.$saved=2 --set run.name=$name
  "$spartan" train --config c.toml --set run.name=$name > x.log
  grep -q "at step 3" x.log || fail "${saved^^}=2 -> 1: no resume"
  close runs/straight-1/metrics.jsonl runs/$name/metrics.jsonl ||
    { paste <(losses runs/straight-1/metrics.jsonl) <(losses runs/$name/metrics.jsonl); cat x.log;
      fail "${saved^^}=2 -> 1: losses"; }
done

# And the other way: saved on 1 rank, resumed on TP=2 x DP=2 (4 ranks).
name=moved-1-to-4
killed kill-after-save=3 k.log "$spartan" train --config c.toml --set run.name=$name
mpirun --oversubscribe -np 4 "$spartan" train --config c.toml --set parallel.tp=2 \
  --set parallel.dp=2 --set run.name=$name > x.log
grep -q "at step 3" x.log || fail "1 -> TP=2 x DP=2: no resume"
close runs/straight-1/metrics.jsonl runs/$name/metrics.jsonl || fail "1 -> TP=2 x DP=2: losses"

# Offline merge. SoRA: adapted and merged logits agree; SPP on a 2:4 base trained on TP=2:
# every zero kept (merge refuses otherwise), the merged folder is still 2:4.
"$spartan" merge --run runs/straight-1 --out merged-sora > m.log
grep -q "SoRA ranks kept" m.log || fail "merge: SoRA ranks"
awk '/max \|logit\| difference/ { if ($NF + 0 > 1e-4) exit 1; found = 1 } END { exit !found }' \
  m.log || { cat m.log; fail "merge: logits differ"; }
test -f merged-sora/model.safetensors -a -f merged-sora/config.json -a -f merged-sora/tokenizer.model
grep -q "\"rank_pattern\"" merged-sora/adapter/adapter_config.json || fail "merge: no PEFT adapter"
"$spartan" prune --config c.toml --set prune.method=magnitude --set prune.pattern=2:4 \
  --set prune.out="$dir/pruned" --set prune.calib_samples=4 > /dev/null
# Pruning split over 2 ranks (a layer each, activations passed on) writes the same bytes.
for np in 1 2; do
  mpirun --oversubscribe -np $np "$spartan" prune --config c.toml --set prune.method=wanda \
    --set prune.out="$dir/wanda-$np" --set prune.calib_samples=4 > /dev/null
done
cmp wanda-1/model.safetensors wanda-2/model.safetensors || fail "prune on 2 ranks differs"
"${mpi2[@]}" "$spartan" train --config c.toml --set parallel.tp=2 --set adapter.method=spp \
  --set model.path="$dir/pruned" --set run.name=spp > /dev/null
"$spartan" merge --run runs/spp --out merged-spp > m.log
awk '/^model.layers/ { if ($2 != $3 || $2 < 0.5) bad = 1; n++ } END { exit bad || n != 14 }' m.log \
  || { cat m.log; fail "merge: SPP zeros"; }
"$spartan" model info merged-spp | grep -q "2:4" || fail "merged SPP folder is not 2:4"

# Resuming on a base with other values and another zero pattern (same names and shapes) is
# refused: by the sampled value digest, and, for a checkpoint saved before that digest existed
# (format 1, no checksum: the key deleted from its manifest), by the zero-pattern digests.
killed kill-after-save=3 k.log "$spartan" train --config c.toml --set adapter.method=spp \
  --set model.path="$dir/pruned" --set run.name=spp-moved
"$spartan" prune --config c.toml --set prune.method=magnitude --set prune.pattern=4:8 \
  --set prune.out="$dir/pruned" --set prune.calib_samples=4 > /dev/null
expect_error "the checkpoint was saved for another base model values than this run's" \
  "$spartan" train --config c.toml --set adapter.method=spp --set model.path="$dir/pruned" \
  --set run.name=spp-moved
sed -i -e '/"base model values"/d' -e '/"checksum"/d' -e 's/"format_version": 4/"format_version": 1/' \
  runs/spp-moved/checkpoints/step-00000003/manifest.json
expect_error "the base model's zero pattern of model.layers.0.self_attn.q_proj.weight differs" \
  "$spartan" train --config c.toml --set adapter.method=spp --set model.path="$dir/pruned" \
  --set run.name=spp-moved

# A save that fails (file size limit: the write gets EFBIG) stops the run with a clear error
# and leaves the previous checkpoint the newest complete one.
killed kill-after-save=3 k.log "$spartan" train --config c.toml --set run.name=full-disk
expect_error "saving the checkpoint failed: cannot .*step-00000006.tmp/shard-pp00-tp00.h5" \
  bash -c "trap '' XFSZ; ulimit -f 64; exec \"$spartan\" train --config c.toml \
    --set run.name=full-disk"
[[ $(cat runs/full-disk/checkpoints/latest) == step-00000003 ]] || fail "failed save: latest"
"$spartan" ckpt info runs/full-disk > /dev/null || fail "failed save: step 3 damaged"

# ckpt info reads everything back.
"$spartan" ckpt info runs/straight-1 > info.log
grep -q "checksums verified" info.log || fail "ckpt info"
grep -q "topology     dp 1 x pp 1 x tp 1" info.log || fail "ckpt info topology"

# Damage: one byte of a shard, a deleted shard, an edited manifest; each names the file.
ck=runs/straight-1/checkpoints/step-00000008
cp -r $ck bad1
size=$(stat -c %s bad1/shard-pp00-tp00.h5)
printf '\xa5' | dd of=bad1/shard-pp00-tp00.h5 bs=1 seek=$((size / 2)) conv=notrunc 2> /dev/null
expect_error "fails its checksum or cannot be read, bad1/shard-pp00-tp00.h5" \
  "$spartan" ckpt info bad1
cp -r $ck bad2 && rm bad2/shard-pp00-tp00.h5
expect_error "cannot open the checkpoint file (missing or not HDF5), bad2/shard-pp00-tp00.h5" \
  "$spartan" ckpt info bad2
cp -r $ck bad3 && sed -i 's/"format_version": 4/"format_version": 7/' bad3/manifest.json
expect_error "manifest field 'format_version' is 7, outside \[1, 4\], bad3/manifest.json" \
  "$spartan" ckpt info bad3
expect_error "fails its checksum" "$spartan" train --config c.toml --set run.name=straight-1 \
  --set optim.max_steps=9 --resume bad1
# Another base model: refused.
"$spartan" model init --config c.toml --set model.init.hidden_size=48 --out base2 > /dev/null
expect_error "the checkpoint was saved for another base model than this run's" \
  "$spartan" train --config c.toml --set run.name=straight-1 --set model.path="$dir/base2" \
  --set optim.max_steps=9
echo ok
