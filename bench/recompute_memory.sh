#!/usr/bin/env bash
# What activation recomputation saves: one model (hidden 1024, 8 layers, 103M parameters, random
# weights), LoRA on every projection, sequences of 512 tokens, micro-batches of 4, trained two
# steps with train.recompute = "none" and "layer"; prints each run's peak resident memory above
# what the process held before its model loaded, the step time, and spartan plan's activation
# figures for the same configuration. On the CPU (no GPU figure here).
#
#   bench/recompute_memory.sh SPARTAN FIXTURES
set -euo pipefail
spartan=$(realpath "$1"); fixtures=$(realpath "$2")
dir=$(mktemp -d /tmp/spartan-recompute.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
for i in $(seq 1 3000); do
  echo "line $i: the quick brown fox $((i * 7)) jumps over the lazy dog and runs $((i % 9)) miles"
done > text.txt
cat > c.toml <<TOML
[run]
name = "none"
output_dir = "$dir/runs"
log_every = 1
tensorboard = false
device = "cpu"
[model]
path = "$dir/base"
dtype = "fp32"
[model.init]
vocab_size = 1000
hidden_size = 1024
intermediate_size = 2816
num_layers = 8
num_heads = 16
num_kv_heads = 16
max_position_embeddings = 512
[adapter]
method = "lora"
dropout = 0.0
[data]
path = "$dir/text.txt"
tokenizer = "$fixtures/tokenizer/tokenizer.model"
seq_len = 512
held_out_fraction = 0
[optim]
global_batch_size = 4
micro_batch_size = 4
max_steps = 2
TOML
"$spartan" model init --config c.toml --out base > /dev/null
for mode in none layer; do
  "$spartan" train --config c.toml --set run.name=$mode --set train.recompute=$mode > $mode.log
  python3 - runs/$mode/summary.json $mode <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
peak = s["peak_resident_gib"] if "peak_resident_gib" in s else s["peak_resident_bytes"]
peak = peak[0] if isinstance(peak, list) else peak
before = s["resident_before_load_gib"]
before = before[0] if isinstance(before, list) else before
print(f"recompute {sys.argv[2]:5s}: peak {peak:.2f} GiB, {peak - before:.2f} GiB above the process before its model loaded, {s.get('seconds', 0):.1f} s for 2 steps")
PY
done
echo "spartan plan of the same configuration (GB):"
for mode in none layer; do
  echo "  recompute $mode:"
  "$spartan" plan c.toml --set train.recompute=$mode | grep -A1 "^stage     layers" | sed 's/^/    /'
done
