#!/usr/bin/env bash
# scale.sh SPARTAN FIXTURES [70b|65b]
# LLaMA-2-70B's true shapes (hidden 8192, MLP 28672, 64 heads with 8 KV heads, vocabulary 32000),
# or LLaMA-1-65B's (MLP 22016, 64 KV heads), with two layers of random weights pruned 2:4 (2.24B
# or 1.93B parameters, 8.9 or 7.7 GB in fp32), sharded end to end on 8 ranks: one SPP step on TP = 8 with a checkpoint and the streamed merge into a sparse HF
# folder, a second step resumed from that checkpoint on TP = 4 x PP = 2, one SoRA step on TP = 8.
# Every rank's memory must be its shard, not the model: what a rank adds to the process it started
# as (its peak from the first step minus what it held before its shard loaded: libraries and MPI,
# about 0.37 GB) is at least 90% of the plan's device-independent terms (base shard, trainable
# state, activations with SPP's backward workspace, logits) and at most 0.3 GB above them.
# Measured on 2026-12-01 (70B): 0.02 GB below to 0.19 GB above (docs/scale.md); before blocks
# from 1 MiB were handed back when freed (trainer/process.h), the heap's free blocks added 0.04-
# 0.28 GB. A rank that held one whole projection of another rank's (0.94 GB) would be far above.
#
# About 6 to 11 minutes (less with the pruned base kept in SPARTAN_SCALE_DIR) and 12 GB on 2 cores;
# run when SPARTAN_SCALE=1 (ctest -L scale), else skipped (exit 77), because CI's 40 minutes have
# no room for it.
set -Eeuo pipefail
spartan="$1"; fixtures="$2"; shape="${3:-70b}"
case "$shape" in
  70b) intermediate=28672 kv_heads=8 ;;
  65b) intermediate=22016 kv_heads=64 ;;
  *) echo "scale.sh: unknown shape '$shape' (70b or 65b)" >&2; exit 2 ;;
esac
if [ "${SPARTAN_SCALE:-0}" != 1 ]; then
  echo "skipped: the $shape slice takes about 11 minutes; run it with SPARTAN_SCALE=1 ctest -L scale"
  exit 77
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpirun=(mpirun --oversubscribe -np 8)
# SPARTAN_SCALE_DIR: work there and keep it (its pruned base is reused by the next run).
if [ -n "${SPARTAN_SCALE_DIR:-}" ]; then
  dir=$SPARTAN_SCALE_DIR; mkdir -p "$dir"; cd "$dir"; rm -rf runs
else
  cli_workdir
fi
trap 'echo "scale.sh: failed at line $LINENO" >&2' ERR
start=$SECONDS
step() { echo "[$((SECONDS - start)) s] $*"; }

qa_jsonl 40 > qa.jsonl
cat > c.toml <<TOML
[run]
name = "spp"
output_dir = "$dir/runs"
log_every = 1
tensorboard = false
[model]
path = "$dir/base-$shape"
dtype = "fp32"  # as trained here; the plan's "auto" would count bf16, a GPU's
[model.init]
vocab_size = 32000
hidden_size = 8192
intermediate_size = $intermediate
num_layers = 2
num_heads = 64
num_kv_heads = $kv_heads
max_position_embeddings = 4096
[adapter]
method = "spp"
r = 16
alpha = 16
dropout = 0.0
targets = ["q", "k", "v", "o", "gate", "up", "down"]
[data]
path = "$dir/qa.jsonl"
tokenizer = "$fixtures/tokenizer/tokenizer.model"
seq_len = 128
held_out_fraction = 0.0
[optim]
lr = 1e-3
warmup_ratio = 0.0
global_batch_size = 2
micro_batch_size = 1
max_steps = 1
[checkpoint]
every = 1
[prune]
method = "magnitude"
pattern = "2:4"
calib_samples = 1
TOML

if [ ! -f base-$shape/prune_report.json ]; then
  step "model init"
  rm -rf dense base-$shape
  "$spartan" model init --config c.toml --out dense > init.log
  step "prune 2:4"
  "$spartan" prune --config c.toml --set model.path="$dir/dense" --out base-$shape > prune.log
  grep -q "every group obeys the pattern" prune.log
  rm -rf dense
fi

# The plan's terms that do not depend on the device (base, trainable, activations, logits), for
# its largest stage, with the --set options given.
planned_gb() {
  "$spartan" plan c.toml "$@" | awk '
    /^stage/ { table = 1; next }
    table && NF < 9 { table = 0 }
    table { gb = $3 + $4 + $5 + $6; if (gb > most) most = gb }
    END { print most }'
}
# The list named $2 in summary.json $1, one number (a rank's) a line.
per_rank() { tr -d ' \n' < "$1" | grep -o "\"$2\":\[[^]]*\]" | sed 's/.*\[//; s/\]//' | tr ',' '\n'; }
# What each rank added to the process it started as (summary.json's peak minus what it held before
# its shard loaded) against the plan's terms: from 90% of them to 0.3 GB above.
check_peaks() {  # run folder, planned GB
  paste -d ' ' <(per_rank "$1/summary.json" peak_resident_gib) \
    <(per_rank "$1/summary.json" resident_before_load_gib) | awk -v plan="$2" -v run="$1" '
    { peak = $1 * 1.073741824; added = ($1 - $2) * 1.073741824; n++
      printf "%s rank %d: peak %.2f GB, %.2f GB above its start, planned %.2f GB\n",
             run, n - 1, peak, added, plan
      if (added < 0.9 * plan || added > plan + 0.3) { print "  out of the bounds"; bad = 1 }
    }
    END { exit bad || n != 8 }'
}

step "SPP, TP = 8: one step, checkpoint, merge"
"${mpirun[@]}" "$spartan" train --config c.toml --set parallel.tp=8 > spp.log
grep -q "step 1/1" spp.log
grep -q "each of the 14 merged weights keeps exactly the zeros of its base weight" spp.log
test -f runs/spp/checkpoints/step-00000001/manifest.json
check_peaks runs/spp "$(planned_gb --set parallel.tp=8)"
# The merged folder holds every projection 2:4, as the base did.
"$spartan" model info runs/spp/merged > merged-info.txt
test "$(grep -c "proj.weight.* 2:4" merged-info.txt)" = 14

step "SPP resumed on TP = 4 x PP = 2: step 2"
"${mpirun[@]}" "$spartan" train --config c.toml --set parallel.tp=4 --set parallel.pp=2 \
  --set optim.max_steps=2 > resume.log
grep -q "resum" resume.log
grep -q "step 2/2" resume.log
grep -q "each of the 14 merged weights keeps exactly the zeros of its base weight" resume.log
check_peaks runs/spp "$(planned_gb --set parallel.tp=4 --set parallel.pp=2)"

step "SoRA, TP = 8: one step"
"${mpirun[@]}" "$spartan" train --config c.toml --set parallel.tp=8 --set adapter.method=sora \
  --set adapter.r=8 --set run.name=sora > sora.log
grep -q "step 1/1" sora.log
check_peaks runs/sora \
  "$(planned_gb --set parallel.tp=8 --set adapter.method=sora --set adapter.r=8)"
step "done"
