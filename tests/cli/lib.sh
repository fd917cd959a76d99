# Shared by the CLI test scripts (source it after setting $fixtures): a scratch folder, tiny
# instruction data and the TOML sections of the tiny model they all init and train.

# A temporary folder, removed at exit, as the working directory; sets $dir.
cli_workdir() {
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
  cd "$dir"
}

# N Alpaca records: "What is i plus 3i?" -> "It is 4i."
qa_jsonl() {
  for i in $(seq 1 "$1"); do
    printf '{"instruction": "What is %d plus %d?", "input": "", "output": "It is %d."}\n' \
      "$i" "$((i * 3))" "$((i * 4))"
  done
}

# [model] at $dir/base and [model.init] of an 82.6K-parameter LLaMA with GQA.
tiny_model_toml() {
  cat <<TOML
[model]
path = "$dir/base"
[model.init]
vocab_size = 1000
hidden_size = 32
intermediate_size = 64
num_layers = 2
num_heads = 4
num_kv_heads = 2
TOML
}

# [data]: $dir/qa.jsonl with the fixture tokenizer, sequences of $1 tokens, 10% held out.
qa_data_toml() {
  cat <<TOML
[data]
path = "$dir/qa.jsonl"
tokenizer = "$fixtures/tokenizer/tokenizer.model"
seq_len = $1
held_out_fraction = 0.1
TOML
}

# A LoRA run of the tiny model on 80 instructions that logs every step, for the tests that stop
# a run and compare its final losses with an uninterrupted one: writes c.toml (STEPS optimizer
# steps, then any extra TOML lines given) and the base model.
stoppable_run() {
  local steps=$1; shift
  qa_jsonl 80 > qa.jsonl
  cat > c.toml <<TOML
$(printf '%s\n' "$@")
[run]
output_dir = "$dir/runs"
log_every = 1
$(tiny_model_toml)
[adapter]
method = "lora"
dropout = 0.0
$(qa_data_toml 128)
[optim]
global_batch_size = 4
micro_batch_size = 2
max_steps = $steps
TOML
  "$spartan" model init --config c.toml --out base > /dev/null
}

# The last five losses of a run's metrics.jsonl.
last_losses() { grep -o '"loss":[^,]*' "$1" | cut -d: -f2 | tail -n 5; }
