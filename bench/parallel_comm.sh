#!/usr/bin/env bash
# Communication of the demo's LoRA fine-tune on 2 ranks as TP=2, PP=2 and DP=2: the share of
# step time spent in communication and the bytes rank 0 moves per step, beside the analytic count
# for the same shapes. This machine has 2 cores, so it measures traffic and overhead, not scaling.
#
#   bench/parallel_comm.sh [model folder] [steps]     (after scripts/demo)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
spartan="${SPARTAN_BUILD_DIR:-$root/build}/launcher/spartan"
model="${1:-$root/runs/demo/pretrain/model}"
steps="${2:-12}"
cd "$root"
[[ $(id -u) == 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The shapes the analytic count uses (configs/demo.toml with a micro-batch of 4).
H=$(grep -o '"hidden_size": *[0-9]*' "$model/config.json" | grep -o '[0-9]*$')
L=$(grep -o '"num_hidden_layers": *[0-9]*' "$model/config.json" | grep -o '[0-9]*$')
T=256 G=16 b=4 r=16
common=(--config configs/demo.toml --set model.path="$model" --set optim.max_steps=$steps
        --set optim.micro_batch_size=$b --set eval.every=0 --set run.log_every=$steps
        --set run.output_dir="$out")

printf "%-8s %10s %12s %16s %16s %8s\n" layout "tok/s" "comm share" "bytes/step" "analytic" ratio
one() {  # name, group, analytic bytes per step, then --set overrides
  local name=$1 group=$2 analytic=$3; shift 3
  local np=2
  [[ $name == one ]] && np=1
  mpirun --oversubscribe -np $np "$spartan" train "${common[@]}" --set run.name=$name "$@" \
    > "$out/$name.log" 2>&1 || { grep "error" "$out/$name.log"; exit 1; }
  local last; last=$(tail -n 1 "$out/$name/metrics.jsonl")
  local tps share bytes
  tps=$(grep -o '"tokens_per_s":[0-9.e+-]*' <<< "$last" | cut -d: -f2)
  share=$(grep -o '"comm_share":[0-9.e+-]*' <<< "$last" | cut -d: -f2 || echo 0)
  bytes=$(grep -o "\"$group\":[0-9]*" <<< "$last" | cut -d: -f2 || echo 0)
  awk -v n="$name" -v t="$tps" -v s="${share:-0}" -v by="${bytes:-0}" -v st="$steps" \
      -v a="$analytic" 'BEGIN { printf "%-8s %10.0f %11.1f%% %16.0f %16.0f %8.4f\n",
                                n, t, 100 * s, by / st, a, (a > 0 ? by / st / a : 0) }'
}
M=$((G / b)); act=$((b * T * H * 4))
# TP: forward all-reduces (embedding, o and down per layer), the vocab-parallel loss (3 vectors of
# b(T-1) floats), backward all-reduces (MLP input per layer, attention input of layers 2.., head
# input), LoRA gradients that are partial sums (A of q k v gate up, B of o down), the norm.
tp=$(( M * (act * (1 + 2 * L) + 3 * b * (T - 1) * 4 + act * 2 * L) + 7 * r * H * 4 * L + 8 ))
# PP: each micro-batch's activation forward and its gradient back; loss and norm (8 bytes each).
pp=$(( 2 * act * M + 16 ))
# DP: all LoRA gradients in buckets, the token count and the loss (8 bytes each).
one one tp 0
one tp2 tp "$tp" --set parallel.tp=2
one pp2 pp "$pp" --set parallel.pp=2
params=$(grep -m1 "^method" "$out/tp2.log" | grep -o '[0-9]* trainable' | cut -d' ' -f1)
one dp2 dp $(( params * 4 + 16 )) --set parallel.dp=2
echo "model $model, $steps steps of $G sequences x $T tokens, micro-batch $b, LoRA r=$r on 7 projections"
