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
