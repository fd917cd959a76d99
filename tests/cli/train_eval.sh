#!/usr/bin/env bash
# End to end through the executable: init a tiny model, train it (full), fine-tune it (LoRA),
# evaluate with and without the adapter; plus the errors a user meets first.
set -euo pipefail
spartan="$1"; fixtures="$2"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cli_workdir
for i in $(seq 1 120); do
  echo "line $i: the quick brown fox $((i * 7)) jumps over the lazy dog and runs $((i % 9)) miles"
done > text.txt
qa_jsonl 60 > qa.jsonl
cat > base.toml <<TOML
[run]
name = "full"
output_dir = "$dir/runs"
log_every = 2
$(tiny_model_toml)
[adapter]
method = "full"
[data]
path = "$dir/text.txt"
tokenizer = "$fixtures/tokenizer/tokenizer.model"
seq_len = 32
held_out_fraction = 0.1
[optim]
lr = 3e-3
global_batch_size = 4
micro_batch_size = 2
max_steps = 4
TOML
"$spartan" model init --config base.toml --out base > init.log
grep -q "smoke forward: loss" init.log
"$spartan" train --config base.toml > full.log
grep -q "step 4/4" full.log
grep -q "saved $dir/runs/full/model" full.log
test -f runs/full/model/model.safetensors
test -f runs/full/model/tokenizer.model
[[ $(wc -l < runs/full/metrics.jsonl) == 2 ]]

sed -e 's/name = "full"/name = "lora"/' -e 's/method = "full"/method = "lora"/' \
    -e "s#path = \"$dir/base\"#path = \"$dir/runs/full/model\"#" \
    -e "s#path = \"$dir/text.txt\"#path = \"$dir/qa.jsonl\"#" \
    -e "s/seq_len = 32/seq_len = 96/" base.toml > lora.toml
"$spartan" train --config lora.toml > lora.log
grep -q "method       lora" lora.log
test -f runs/lora/adapter/adapter_config.json

# [eval] path: held-out data from a file of its own (all of it); a missing one is refused.
"$spartan" train --config lora.toml --set run.name=evalpath --set eval.path="$dir/text.txt" \
  > evalpath.log
grep -q "held-out sequences from $dir/text.txt" evalpath.log || { cat evalpath.log; exit 1; }
set +e
out=$("$spartan" train --config lora.toml --set run.name=evalmissing \
  --set eval.path="$dir/missing.jsonl" 2>&1); rc=$?
set -e
[[ $rc == 1 && "$out" == "spartan: error: cannot read data file, $dir/missing.jsonl"* ]] ||
  { echo "$out"; exit 1; }

# A sequence length that cuts every response away is refused (it would train on nothing).
set +e
out=$("$spartan" train --config lora.toml --set run.name=short --set data.seq_len=4 2>&1); rc=$?
set -e
[[ $rc == 2 && "$out" == "spartan: error: no training sequence keeps a token of a response: "* ]] ||
  { echo "$out"; exit 1; }

# SoRA: gates with a large threshold switch ranks off; the rest is exported as a PEFT LoRA.
"$spartan" train --config lora.toml --set adapter.method=sora --set run.name=sora \
  --set adapter.sora.lambda2=0.5 > sora.log
grep -q "| ranks " sora.log
grep -q "^SoRA kept " sora.log
"$spartan" eval --model runs/full/model --adapter runs/sora/adapter --data qa.jsonl > eval_sora.log

"$spartan" eval --model runs/full/model --data qa.jsonl > eval_base.log
"$spartan" eval --model runs/full/model --adapter runs/lora/adapter --data qa.jsonl > eval_lora.log
"$spartan" eval --model runs/full/model --data text.txt --window 16 --stride 8 > eval_text.log
grep -q "instruction records, responses only" eval_lora.log
grep -q "window 16, stride 8" eval_text.log
# The adapter changes the numbers.
! diff -q eval_base.log eval_lora.log > /dev/null

# generate: a run's checkpoint applied from its shards gives the tokens of its exported PEFT
# adapter (greedy), for LoRA and for SoRA (exported as a LoRA of its kept ranks).
for run in lora sora; do
  "$spartan" generate --run runs/$run --input <(printf 'What is 1 plus 3?\nWhat is 2 plus 6?\n') \
    --max-new-tokens 12 --jsonl > gen-run.log
  "$spartan" generate --model runs/full/model --adapter runs/$run/adapter \
    --input <(printf 'What is 1 plus 3?\nWhat is 2 plus 6?\n') --max-new-tokens 12 --jsonl > gen-peft.log
  [[ $(wc -l < gen-run.log) == 2 ]] || { cat gen-run.log; exit 1; }
  diff <(grep -o '"completion":"[^"]*"' gen-run.log) <(grep -o '"completion":"[^"]*"' gen-peft.log) ||
    { echo "generate: $run's checkpoint and its PEFT adapter differ"; exit 1; }
done
set +e
out=$("$spartan" generate --run runs/lora --prompt "" 2>&1); rc=$?
set -e
[[ $rc == 2 && "$out" == "spartan: error: no prompt"* ]] || { echo "$out"; exit 1; }
# The LoRA run trained on runs/full/model; the initial base has its shapes but other values.
set +e
out=$("$spartan" generate --run runs/lora --model base --prompt "hi" 2>&1); rc=$?
set -e
[[ $rc == 2 && "$out" == "spartan: error: the run trained on another base model"* ]] ||
  { echo "$out"; exit 1; }
"$spartan" generate --run runs/lora --prompt "$(printf 'word %.0s' $(seq 1 700))" \
  --max-new-tokens 4 > /dev/null 2> long.err
grep -q "spartan: warning: the prompt was cut from the left by" long.err || { cat long.err; exit 1; }
grep -q "generated at" long.err

# Pruning the trained model: Wanda 2:4, calibrated on the text; the folder reports 2:4.
cat > prune.toml <<TOML
[model]
path = "$dir/runs/full/model"
[data]
path = "$dir/text.txt"
seq_len = 32
[prune]
method = "wanda"
pattern = "2:4"
calib_samples = 8
out = "$dir/pruned"
TOML
"$spartan" prune --config prune.toml > prune.log
grep -q "every group obeys the pattern" prune.log
grep -q "held-out perplexity" prune.log
# Without held-out text nothing is evaluated, and the log says so rather than a perplexity of 1.
"$spartan" prune --config prune.toml --set data.held_out_fraction=0 \
  --set prune.out="$dir/pruned-unevaluated" > unevaluated.log
grep -q "^not evaluated: no held-out tokens" unevaluated.log || { cat unevaluated.log; exit 1; }
if grep -q "held-out perplexity" unevaluated.log; then cat unevaluated.log; exit 1; fi
test -f pruned/prune_report.json
"$spartan" model info pruned | grep "layers.1.mlp.down_proj" | grep -q "0.5000    2:4"
set +e
out=$(sed 's/pattern = "2:4"/pattern = "4:4"/' prune.toml > bad.toml; "$spartan" prune --config bad.toml 2>&1); rc=$?
set -e
[[ $rc == 2 && "$out" == "spartan: error: prune.pattern = \"4:4\" is neither unstructured nor N:M"* ]]

# Errors: one line each, exit 2 for configuration mistakes. Another method on a run folder that
# has a checkpoint (the LoRA run above) is refused, not resumed.
sed 's/method = "lora"/method = "compacter"/' lora.toml > compacter.toml
set +e
out=$("$spartan" train --config compacter.toml 2>&1 | tail -n 1); rc=$?  # pipefail: spartan's code
set -e
[[ $rc == 2 ]]
[[ "$out" == "spartan: error: the checkpoint was saved for another adapter method than this run's, "*"/runs/lora/checkpoints/step-00000004/manifest.json, resume with the same base model and settings, or start a new run (another run.name)" ]]
set +e
out=$("$spartan" eval --model runs/full/model --data missing.txt 2>&1); rc=$?
set -e
[[ $rc == 1 && "$out" == "spartan: error: cannot read data file, missing.txt"* ]]
echo "ok: init, train (full, LoRA, SoRA), eval (rows, stream, adapter), prune, errors"
