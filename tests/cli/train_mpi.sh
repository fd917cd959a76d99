#!/usr/bin/env bash
# `spartan train` under mpirun: the same config on 1 rank and on a TP=2 or PP=2 grid gives the
# same losses (metrics.jsonl) and saves the same kinds of results; a layout that does not match
# the number of ranks ends every rank quickly with one clear error.
set -euo pipefail
spartan="$1"; fixtures="$2"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpirun=(mpirun --oversubscribe -np 2)
cli_workdir
qa_jsonl 60 > qa.jsonl
cat > c.toml <<TOML
[run]
name = "one"
output_dir = "$dir/runs"
log_every = 1
$(tiny_model_toml)
[adapter]
method = "lora"
dropout = 0.0
$(qa_data_toml 128)
[optim]
lr = 3e-3
eps = 1e-2
global_batch_size = 4
micro_batch_size = 2
max_steps = 3
TOML
"$spartan" model init --config c.toml --out base > init.log

# Losses of each step, one per line.
losses() { grep -o '"loss":[^,]*' "$1" | cut -d: -f2; }
same_losses() {  # within 1e-5 relative
  paste <(losses "$1") <(losses "$2") |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * $2) bad = 1; n++ }
         END { exit (bad || n != 3) }'
}

for method in lora spp sora; do
  "$spartan" train --config c.toml --set adapter.method=$method --set run.name=$method-1 > one.log
  for layout in "tp=2 pp=1" "tp=1 pp=2"; do
    set -- $layout
    name=$method-${1/=/}-${2/=/}
    "${mpirun[@]}" "$spartan" train --config c.toml --set adapter.method=$method \
      --set parallel.$1 --set parallel.$2 --set run.name=$name > $name.log
    grep -q "layout       2 ranks" $name.log
    grep -q "comm [0-9]*%" $name.log
    same_losses runs/$method-1/metrics.jsonl runs/$name/metrics.jsonl ||
      { echo "$name: losses differ from one rank"; paste <(losses runs/$method-1/metrics.jsonl) \
        <(losses runs/$name/metrics.jsonl); exit 1; }
  done
done
test -f runs/lora-tp2-pp1/adapter/adapter_model.safetensors
test -f runs/spp-tp1-pp2/merged/model.safetensors
grep -q "exported as LoRA" sora-tp2-pp1.log
# A distributed run exports from its final checkpoint through the streaming merge (rank 0 never
# loads the whole model): the same bytes as `spartan merge` of that run, for SPP's merged folder
# and LoRA*'s re-masked one, whose held-out loss is evaluated on the layout's shards.
"$spartan" merge --run runs/spp-tp2-pp1 --out spp-offline > /dev/null
cmp spp-offline/model.safetensors runs/spp-tp2-pp1/merged/model.safetensors
grep -q "merged SPP into the base (streamed from .*step-00000003)" spp-tp2-pp1.log
"${mpirun[@]}" "$spartan" train --config c.toml --set adapter.merge=\"masked\" \
  --set parallel.tp=2 --set run.name=lora-star > lora-star.log
"$spartan" merge --run runs/lora-star --out lora-star-offline > /dev/null
cmp lora-star-offline/model.safetensors runs/lora-star/merged/model.safetensors
cmp lora-star-offline/adapter/adapter_model.safetensors runs/lora-star/adapter/adapter_model.safetensors
grep -q "^merged, zeros re-imposed" lora-star.log
# --merge chooses the form whatever the run trained with: the same LoRA training merged both ways.
"$spartan" merge --run runs/lora-tp2-pp1 --merge masked --out lora-masked > /dev/null
cmp lora-masked/model.safetensors runs/lora-star/merged/model.safetensors
"$spartan" merge --run runs/lora-star --merge dense --out lora-star-dense > /dev/null
"$spartan" merge --run runs/lora-tp2-pp1 --out lora-dense > /dev/null
cmp lora-star-dense/model.safetensors lora-dense/model.safetensors
! cmp -s lora-dense/model.safetensors lora-masked/model.safetensors
"$here/expect.sh" 2 "SPP has no dense or masked merge to choose" -- \
  "$spartan" merge --run runs/spp-tp2-pp1 --merge masked --out spp-masked
test ! -e spp-masked
# generate under mpirun splits the model over the ranks (TP) and gives one process's tokens, from
# a checkpoint saved on another layout (PP=2).
for run in lora-tp1-pp2 sora-tp2-pp1; do
  "$spartan" generate --run runs/$run --prompt "What is 2 plus 6?" --max-new-tokens 12 > gen-1.log
  "${mpirun[@]}" "$spartan" generate --run runs/$run --prompt "What is 2 plus 6?" \
    --max-new-tokens 12 > gen-2.log
  diff gen-1.log gen-2.log || { echo "generate: 2 ranks differ from one ($run)"; exit 1; }
done
# ... and from a PEFT adapter folder, cut to each rank's slices: LoRA, SoRA's LoRA with a
# rank_pattern, (IA)^3, prompt and prefix tuning.
for method in ia3 prompt prefix; do
  "$spartan" train --config c.toml --set adapter.method=$method --set run.name=$method \
    --set optim.lr=1e-2 > $method.log
done
for run in lora-tp1-pp2 sora-tp2-pp1 ia3 prompt prefix; do
  gen=(generate --model base --adapter runs/$run/adapter --prompt "What is 2 plus 6?"
       --tokenizer "$fixtures/tokenizer/tokenizer.model" --max-new-tokens 12)
  "$spartan" "${gen[@]}" > gen-1.log
  "${mpirun[@]}" "$spartan" "${gen[@]}" > gen-2.log
  diff gen-1.log gen-2.log || { echo "generate --adapter: 2 ranks differ from one ($run)"; exit 1; }
done
# Prompt, prefix and block adapters of a run of several ranks are written by rank 0 from the
# gathered trained tensors alone (no base model loaded there): the adapter one process writes.
"$spartan" train --config c.toml --set adapter.method=houlsby --set run.name=houlsby \
  --set optim.lr=1e-2 > houlsby.log
for spec in "prompt tp=2" "prefix tp=2" "houlsby pp=2"; do
  set -- $spec
  "${mpirun[@]}" "$spartan" train --config c.toml --set adapter.method=$1 --set parallel.$2 \
    --set run.name=$1-2 --set optim.lr=1e-2 > $1-2.log
  same_losses runs/$1/metrics.jsonl runs/$1-2/metrics.jsonl || { echo "$1: losses differ"; exit 1; }
  diff runs/$1/adapter/adapter_config.json runs/$1-2/adapter/adapter_config.json
  gen=(generate --model base --prompt "What is 2 plus 6?" --max-new-tokens 12
       --tokenizer "$fixtures/tokenizer/tokenizer.model")
  "$spartan" "${gen[@]}" --adapter runs/$1/adapter > gen-1.log
  "$spartan" "${gen[@]}" --adapter runs/$1-2/adapter > gen-2.log
  diff gen-1.log gen-2.log || { echo "$1: the adapter of 2 ranks differs from one's"; exit 1; }
done

# A layout for 4 ranks started on 2: every rank stops, well within the timeout, with the error.
set +e
timeout 60 "${mpirun[@]}" "$spartan" train --config c.toml --set parallel.dp=4 \
  --set optim.global_batch_size=8 > bad.log 2> bad.err
rc=$?
set -e
[[ $rc != 0 && $rc != 124 ]] || { echo "exit code $rc"; cat bad.err; exit 1; }
grep -q "spartan: error: the layout dp x pp x tp = 4 x 1 x 1 = 4 needs 4 ranks, the job has 2" \
  bad.err || { cat bad.err; exit 1; }
echo "ok"
