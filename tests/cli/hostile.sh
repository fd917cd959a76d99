#!/usr/bin/env bash
# Hostile input (issue 17): bad TOML, config.json, safetensors, tokenizers, data files, tampered
# checkpoints and merge outputs are each refused cleanly. Every case asserts
#   - the exit code: the binary's convention (common/error.h: 2 for a usage or configuration
#     mistake, UsageError; 1 for everything else, spartan::Error; issue 17 states the reverse),
#   - one error line: stderr's last line is `spartan: error: <what>, <where>[, <todo>]`, matches the
#     case's pattern, is the only `spartan: error:` line, and stderr has no crash or backtrace,
#   - that every file that existed before (the shared base model and trained run, the fixtures,
#     the case's own folder) is byte-identical afterwards, and that no file was added, except
#     under a run output folder where the case allows it (`train` writes config.resolved.toml
#     into a new run folder before it loads the model and the data).
# One line per case, `ok   NAME` or `FAIL NAME: why`, then `N cases, M failed`; exit 1 on a failure.
# HOSTILE_VERBOSE=1 also prints the error line of each case that passes.
set -euo pipefail
spartan=$(realpath "$1"); fixtures=$(realpath "$2")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
export OMP_NUM_THREADS=1
cli_workdir                                  # $dir, removed at exit (also on failure)
mkdir tmp cases && export TMPDIR=$dir/tmp    # nothing the commands write lands in /tmp
py=$here/../../.venv/bin/python              # JSON and binary edits (jq is not a dependency)
[[ -x $py ]] || py=python3

# Shared, built once: a tiny base model and a LoRA run of 4 steps with checkpoints at steps 2
# and 4. The run's output_dir is relative, so that a copy resumes with the same resolved config.
qa_jsonl 80 > qa.jsonl
cat > c.toml <<TOML
[run]
name = "r"
output_dir = "runs"
log_every = 1
$(tiny_model_toml)
[adapter]
method = "lora"
dropout = 0.0
$(qa_data_toml 128)
[optim]
global_batch_size = 4
micro_batch_size = 2
max_steps = 4
[checkpoint]
every = 2
TOML
"$spartan" model init --config c.toml --out base > /dev/null
mkdir run0 && (cd run0 && "$spartan" train --config ../c.toml > /dev/null)
ckpt=runs/r/checkpoints/step-00000004     # the newest checkpoint, relative to a case's folder

# ---- the harness -----------------------------------------------------------------------------
digest() { find "$@" -type f -print0 | sort -z | xargs -0 -r sha256sum; }
cases=0; failures=0
setup=(); allow_new=""
# given CMD...: the setup of the next case, run in its folder before the files are hashed.
given() { setup=("$@"); }
# allow NAME: the next case may add files under NAME (a run output folder) in its folder.
allow() { allow_new=$1; }

# case_ NAME CODE PATTERN -- COMMAND...: in a fresh folder cases/NAME (the working directory),
# runs the setup, hashes, runs COMMAND (timeout 120 s, at most 8 GiB of address space so that
# an absurd allocation fails instead of exhausting the machine) and checks the outcome.
case_() {
  local name=$1 code=$2 pattern=$3; shift 4
  local w=$dir/cases/$name rc=0 why=() last
  mkdir "$w" && cd "$w"
  ((${#setup[@]} == 0)) || "${setup[@]}"
  digest "$dir/base" "$dir/run0" "$dir/qa.jsonl" "$dir/c.toml" "$fixtures" "$w" > "$dir/before"
  (ulimit -v $((8 << 20)); exec timeout -k 5 120 "$@") > "$dir/out" 2> "$dir/err" || rc=$?
  digest "$dir/base" "$dir/run0" "$dir/qa.jsonl" "$dir/c.toml" "$fixtures" "$w" > "$dir/after"
  cd "$dir"

  ((rc == code)) || why+=("exit $rc, not $code")
  last=$(tail -n 1 "$dir/err")
  [[ $last =~ ^spartan:\ error:\ .+,\ .+ ]] || why+=("last stderr line is not 'spartan: error: what, where'")
  grep -Eq -- "$pattern" <<< "$last" || why+=("error does not match /$pattern/")
  local errors; errors=$(grep -c '^spartan: error:' "$dir/err" || true)
  ((errors <= 1)) || why+=("$errors error lines")
  grep -Eq 'terminate called|Exception raised from|internal|please report|Aborted|Segmentation' \
    "$dir/err" && why+=("crash or backtrace on stderr")
  local changed added
  changed=$(comm -23 <(sort "$dir/before") <(sort "$dir/after") | awk '{print $2}' | sed "s#^$dir/##")
  [[ -z $changed ]] || why+=("changed or deleted: $(echo $changed)")
  added=$(comm -13 <(awk '{print $2}' "$dir/before" | sort) <(awk '{print $2}' "$dir/after" | sort) |
    { if [[ -n $allow_new ]]; then grep -v "^$w/$allow_new/" || true; else cat; fi } | sed "s#^$dir/##")
  [[ -z $added ]] || why+=("new files: $(echo $added)")
  if declare -F "check_$name" > /dev/null; then
    local extra; extra=$("check_$name" "$dir/out" || true)
    [[ -z $extra ]] || why+=("$extra")
  fi

  cases=$((cases + 1))
  if ((${#why[@]} == 0)); then
    echo "ok   $name"
    [[ -z ${HOSTILE_VERBOSE:-} ]] || echo "     $last"
    rm -rf "$w"
  else
    failures=$((failures + 1))
    echo "FAIL $name: $(printf '%s; ' "${why[@]}")stderr: ${last:0:240}"
  fi
  setup=(); allow_new=""
}

# control NAME -- COMMAND...: the setup that the next cases edit, unedited, is accepted (exit 0),
# so that those cases fail for their edit alone (a JSON or safetensors file written back by the
# helpers below must read as before).
control() {
  local name=$1 w=$dir/cases/$1 rc=0; shift 2
  mkdir "$w" && cd "$w"
  "${setup[@]}"
  timeout -k 5 120 "$@" > "$dir/out" 2>&1 || rc=$?
  cd "$dir"
  cases=$((cases + 1))
  if ((rc == 0)); then
    echo "ok   $name"
    rm -rf "$w"
  else
    failures=$((failures + 1))
    echo "FAIL $name: exit $rc, not 0; $(tail -n 1 "$dir/out")"
  fi
  setup=()
}

# ---- setup functions (run in the case's folder) ----------------------------------------------
file() { printf '%b' "$2" > "$1"; }                         # file NAME CONTENT (printf escapes)
# jedit FILE PYTHON: edits a JSON file, its value bound to d.
jedit() {
  "$py" -c 'import json, sys
p = sys.argv[1]; d = json.load(open(p)); exec(sys.argv[2]); json.dump(d, open(p, "w"), indent=1)' "$@"
}
# model EDIT: a copy of the base model in m/, with config.json edited.
model() { cp -a "$dir/base" m && jedit m/config.json "$1"; }
# st PYTHON: a copy of the base model in m/, its safetensors file edited: the header (a dict h,
# written back compactly and padded) and the data section (a bytearray data), or the whole file
# replaced by raw (from the original bytes b, header length n).
st() {
  cp -a "$dir/base" m
  "$py" -c 'import json, struct, sys, math
p = sys.argv[1]; b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); data = bytearray(b[8 + n:]); raw = None
exec(sys.argv[2])
if raw is None:
    t = json.dumps(h, separators=(",", ":")); t += " " * (-len(t) % 8)
    raw = struct.pack("<Q", len(t)) + t.encode() + bytes(data)
open(p, "wb").write(raw)' m/model.safetensors "$1"
}
run_copy() { cp -a "$dir/run0/runs" runs; }
# tamper PYTHON: a copy of the run with the newest checkpoint's manifest edited (d).
tamper() { run_copy && jedit "$ckpt/manifest.json" "$1"; }
good() { qa_jsonl 20; }                                    # well-formed Alpaca records

# Common commands; in a case's folder, `train` writes runs/r there.
train=("$spartan" train --config "$dir/c.toml")
resume=("$spartan" train --config "$dir/c.toml")           # a copied run: resumes runs/r
tok=$fixtures/tokenizer/tokenizer.model
q0=model.layers.0.self_attn.q_proj.weight
lora=params/model.layers.0.self_attn.q_proj.adapter.lora_A

given model 'pass'
control control.config_json_rewritten -- "$spartan" model info m
given st 'pass'
control control.safetensors_rewritten -- "$spartan" eval --model m --tokenizer "$tok" --data "$dir/qa.jsonl"
given eval 'good > d.jsonl'
control control.data_good -- "${train[@]}" --set data.path=d.jsonl
given tamper 'pass'
control control.manifest_rewritten_resumes -- "${resume[@]}" --set optim.max_steps=5
given tamper 'pass'
control control.manifest_rewritten_info -- "$spartan" ckpt info runs/r

# ---- TOML ------------------------------------------------------------------------------------
given file c.toml '[optim]\nlrr = 1e-4\n'
case_ toml.unknown_key 2 "unknown key 'optim.lrr'.*did you mean 'optim.lr'" -- "$spartan" config --check c.toml
given file c.toml '[optimizer]\nlr = 1e-4\n'
case_ toml.unknown_section 2 "unknown (key|section) 'optimizer" -- "$spartan" config --check c.toml
given file c.toml '[optim]\nlr = "fast"\n'
case_ toml.wrong_type 2 "'optim.lr' must be a number" -- "$spartan" train --config c.toml
case_ toml.negative_batch 2 "'optim.micro_batch_size' = -2 is out of range" -- "${train[@]}" --set optim.micro_batch_size=-2
case_ toml.zero_hidden_size 2 "'model.init.hidden_size' = 0 is out of range" -- \
  "$spartan" model init --config "$dir/c.toml" --set model.init.hidden_size=0 --out m
given file c.toml '[optim]\nlr = inf\n'
case_ toml.lr_inf 2 "'optim.lr' = inf is out of range" -- "$spartan" config --check c.toml
case_ toml.lr_nan 2 "'optim.lr' = nan is out of range" -- "${train[@]}" --set optim.lr=nan
given file c.toml '[model.init]\nhidden_size = 32.5\n'
case_ toml.hidden_size_fractional 2 "'model.init.hidden_size' must be an integer" -- \
  "$spartan" model init --config c.toml --out m
allow runs
case_ toml.seq_len_1e12 2 "seq_len|memory" -- "${train[@]}" --set data.seq_len=1000000000000
given file c.toml '[data]\nseq_len = 0\n'
case_ toml.seq_len_0 2 "'data.seq_len' = 0 is out of range" -- "$spartan" config --check c.toml
allow runs
case_ toml.adapter_r_1e9 2 "adapter\.r|memory" -- "${train[@]}" --set adapter.r=1000000000
given file c.toml '[adapter]\nr = -8\n'
case_ toml.adapter_r_negative 2 "'adapter.r' = -8 is out of range" -- "$spartan" config --check c.toml
case_ toml.tp_not_dividing_heads 2 "parallel.tp = 3 does not divide the 4 attention heads" -- \
  "${train[@]}" --set parallel.tp=3
# Device and precision (CI has no GPU): a GPU asked for where none is, NCCL for a CPU run, fp16
# products.
allow runs
case_ device.cuda_without_gpu 2 "run.device = \"cuda\" but this process sees no CUDA device.*run.device" -- \
  "${train[@]}" --set run.device=cuda
allow runs
case_ device.nccl_on_cpu 2 "the NCCL backend moves CUDA tensors; this run computes on the CPU" -- \
  "${train[@]}" --set parallel.backend=nccl
case_ device.fp16_products 2 "fp16 products need a scaled loss.*model.compute_dtype" -- \
  "${train[@]}" --set model.compute_dtype=fp16
case_ device.eval_cuda_without_gpu 2 "sees no CUDA device.*--device" -- \
  "$spartan" eval --model "$dir/base" --tokenizer "$tok" --data "$dir/qa.jsonl" --device cuda
case_ toml.config_is_folder 2 "the config path is a folder" -- "$spartan" config --check .
case_ toml.config_is_folder_train 2 "the config path is a folder" -- "$spartan" train --config .
case_ toml.missing_file 2 "cannot read config file, nothere.toml" -- "$spartan" train --config nothere.toml
given file c.toml ''
case_ toml.empty_file 2 "no base model folder.*model.path" -- "$spartan" train --config c.toml
given file c.toml '[optim\nlr = 1e-4\n'
case_ toml.syntax_error 2 "TOML syntax error.*c.toml:1" -- "$spartan" config --check c.toml
given file c.toml '[optim]\nlr = 1e-4\nlr = 2e-4\n'
case_ toml.duplicate_key 2 "TOML syntax error" -- "$spartan" config --check c.toml
case_ toml.set_without_value 2 "optim.lr" -- "${train[@]}" --set optim.lr
allow runs
case_ toml.eval_path_missing 1 "cannot read data file, nothere.jsonl" -- "${train[@]}" --set eval.path=nothere.jsonl

# ---- config.json of a model folder -----------------------------------------------------------
given eval 'cp -a "$dir/base" m && file m/config.json "{\"model_type\": \"llama\",\n"'
case_ config_json.not_json 1 "not valid JSON.*m/config.json" -- "$spartan" model info m
given model 'd["hidden_size"] = 32.5'
case_ config_json.hidden_size_fractional 1 "'hidden_size' must be a whole number.*config.json" -- "$spartan" model info m
given model 'd["max_position_embeddings"] = 0'
case_ config_json.max_positions_0 1 "max_position_embeddings.*config.json" -- "$spartan" model info m
allow runs; given model 'd["max_position_embeddings"] = -1'
case_ config_json.max_positions_negative 1 "max_position_embeddings.*config.json" -- "${train[@]}" --set model.path=m
given model 'd["vocab_size"] = 4611686018427387904'
check_config_json.vocab_2p62() {  # 2^62 x 32 x 2 has more than 19 digits: a shorter one wrapped
  grep -o 'config.json implies [0-9]*' "$1" | awk 'length($3) < 20 { print "printed an overflowed count: " $0 }'
}
case_ config_json.vocab_2p62 1 "vocab_size|parameters|memory|too large" -- "$spartan" model info m
allow runs; given model 'd["vocab_size"] = 4611686018427387904'
case_ config_json.vocab_2p62_train 1 "vocab_size|parameters|memory|too large" -- "${train[@]}" --set model.path=m
given model 'd["hidden_size"] = 1000000000'
case_ config_json.hidden_size_1e9 1 "hidden_size|parameters|memory|too large" -- \
  "$spartan" eval --model m --tokenizer "$tok" --data "$dir/qa.jsonl"
allow runs; given model 'd["num_hidden_layers"] = 1000000'
case_ config_json.layers_1e6 2 "num_hidden_layers|layers|parameters|memory|too large" -- "${train[@]}" --set model.path=m
given model 'd["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}'
case_ config_json.rope_type_yarn 1 "rope scaling type 'yarn' is not supported" -- "$spartan" model info m
given model 'd["model_type"] = "mistral"'
case_ config_json.model_type_mistral 1 "model_type 'mistral' is not supported" -- "$spartan" model info m
allow runs; given model 'd["num_attention_heads"] = 5; d["num_key_value_heads"] = 5'
case_ config_json.heads_not_dividing 1 "does not split into 5 heads" -- "${train[@]}" --set model.path=m
given model 'd["num_key_value_heads"] = 3'
case_ config_json.kv_heads_not_dividing 1 "num_key_value_heads" -- "$spartan" model info m

# ---- safetensors -----------------------------------------------------------------------------
given st 'raw = b[:len(b) // 2]'
case_ safetensors.truncated 1 "invalid safetensors file: .*(past|truncated)" -- "$spartan" model info m
given st 'raw = struct.pack("<Q", len(b) + 64) + b[8:]'
case_ safetensors.header_past_end 1 "header length [0-9]+ runs past the end" -- "$spartan" model info m
given st 'raw = b[:8] + b"x" * n + b[8 + n:]'
case_ safetensors.header_not_json 1 "header is not valid JSON" -- "$spartan" model info m
allow runs
given st 'o = "model.layers.0.self_attn.o_proj.weight"; h[o]["data_offsets"] = h["'$q0'"]["data_offsets"]'
case_ safetensors.overlapping_offsets 1 "overlaps" -- "${train[@]}" --set model.path=m
allow runs; given st 'h["'$q0'"]["dtype"] = "I32"'
case_ safetensors.f32_relabelled_i32 1 "I32|dtype" -- "${train[@]}" --set model.path=m
given st 'h["'$q0'"]["dtype"] = "I32"'
case_ safetensors.f32_relabelled_i32_eval 1 "I32|dtype" -- \
  "$spartan" eval --model m --tokenizer "$tok" --data "$dir/qa.jsonl"
given st 'h["'$q0'"]["dtype"] = "Q4_K"'
case_ safetensors.unknown_dtype 1 "unsupported dtype 'Q4_K'" -- "$spartan" model info m
given st 'h["'$q0'"]["shape"] = [32, 31]'
case_ safetensors.shape_offset_mismatch 1 "shape and dtype need 3968 bytes but data_offsets span 4096" -- "$spartan" model info m
allow runs
given st 'b0 = 8 + n + h["'$q0'"]["data_offsets"][0]; raw = b[:b0] + struct.pack("<f", math.nan) * 4 + b[b0 + 16:]'
case_ safetensors.nan_weights 1 "[Nn]a[Nn]|finite" -- "${train[@]}" --set model.path=m
allow runs
given st 'b0 = 8 + n + h["'$q0'"]["data_offsets"][0]; raw = b[:b0] + struct.pack("<f", math.inf) + b[b0 + 4:]'
case_ safetensors.inf_weights 1 "[Ii]nf|finite" -- "${train[@]}" --set model.path=m
allow runs; given st 'del h["'$q0'"]'
case_ safetensors.missing_tensor 1 "$q0" -- "${train[@]}" --set model.path=m
given eval 'cp -a "$dir/base" m && mv m/model.safetensors m/model-1.safetensors &&
  file m/model.safetensors.index.json "{\"weight_map\": {\"$q0\": \"../../../base/model.safetensors\"}}"'
case_ safetensors.index_outside_folder 1 "points outside the folder" -- \
  "$spartan" eval --model m --tokenizer "$tok" --data "$dir/qa.jsonl"

# ---- tokenizer -------------------------------------------------------------------------------
case_ tokenizer.is_folder 1 "the tokenizer path is a folder" -- \
  "$spartan" eval --model "$dir/base" --tokenizer . --data "$dir/qa.jsonl"
allow runs
case_ tokenizer.is_folder_train 1 "the tokenizer path is a folder" -- "${train[@]}" --set data.tokenizer="$dir/tmp"
case_ tokenizer.missing 1 "nothere.model" -- \
  "$spartan" eval --model "$dir/base" --tokenizer nothere.model --data "$dir/qa.jsonl"
case_ tokenizer.model_folder_has_none 1 "base/tokenizer.model" -- \
  "$spartan" eval --model "$dir/base" --data "$dir/qa.jsonl"
given "$py" -c 'import random; open("t.model", "wb").write(random.Random(17).randbytes(4096))'
case_ tokenizer.random_bytes 1 "cannot load sentencepiece model.*t.model" -- \
  "$spartan" eval --model "$dir/base" --tokenizer t.model --data "$dir/qa.jsonl"
given file t.model ''
case_ tokenizer.empty_file 1 "t.model" -- \
  "$spartan" eval --model "$dir/base" --tokenizer t.model --data "$dir/qa.jsonl"
case_ tokenizer.larger_than_vocab 2 "the tokenizer has 1000 pieces, the model's vocabulary only 101" -- \
  "$spartan" eval --model "$fixtures/tiny-llama-gqa" --tokenizer "$tok" --data "$dir/qa.jsonl"
allow runs
case_ tokenizer.larger_than_vocab_train 2 "the tokenizer has 1000 pieces, the model's vocabulary only 101" -- \
  "${train[@]}" --set model.path="$fixtures/tiny-llama-gqa"

# ---- data files ------------------------------------------------------------------------------
allow runs
case_ data.missing 1 "cannot read data file, nothere.jsonl" -- "${train[@]}" --set data.path=nothere.jsonl
allow runs; given file d.txt ''
case_ data.empty 1 "no records.*, d.txt" -- "${train[@]}" --set data.path=d.txt
allow runs; given file d.jsonl ''
case_ data.empty_jsonl 1 "(no records|empty).*d.jsonl" -- "${train[@]}" --set data.path=d.jsonl
given file d.txt ''
case_ data.empty_eval 1 "(no records|empty|no tokens).*d.txt" -- \
  "$spartan" eval --model "$dir/base" --tokenizer "$tok" --data d.txt
allow runs; given mkdir d.jsonl
case_ data.is_folder 1 "folder.*d.jsonl" -- "${train[@]}" --set data.path=d.jsonl
given mkdir d
case_ data.is_folder_eval 1 "folder.*d" -- "$spartan" eval --model "$dir/base" --tokenizer "$tok" --data d
allow runs; given eval '{ echo "{\"instruction\": \"What is 1 plus 3?\", \"input\": \"\""; good; } > d.jsonl'
case_ data.malformed_first_record 2 "first record is not one line of valid JSON.*d.jsonl" -- "${train[@]}" --set data.path=d.jsonl
allow runs; given eval '{ echo "{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\",}"; good; } > d.jsonl'
case_ data.trailing_comma 2 "first record is not one line of valid JSON.*d.jsonl" -- "${train[@]}" --set data.path=d.jsonl
allow runs; given eval '{ printf "{\"instruction\": \"caf\\xe9\", \"input\": \"\", \"output\": \"b\"}\n"; good; } > d.jsonl'
case_ data.invalid_utf8 2 "first record is not one line of valid JSON.*d.jsonl" -- "${train[@]}" --set data.path=d.jsonl
allow runs; given eval 'good | sed "s/, /,\n  /g" > d.jsonl'
case_ data.pretty_printed_without_brackets 2 "first record is not one line of valid JSON.*d.jsonl" -- "${train[@]}" --set data.path=d.jsonl
allow runs; given eval 'good | sed "s/instruction/instrucion/" > d.jsonl'
case_ data.misspelled_field 2 "neither \"instruction\" \(Alpaca\) nor \"text\".*instrucion" -- "${train[@]}" --set data.path=d.jsonl
given eval 'good | sed "s/instruction/instrucion/" > d.jsonl'
case_ data.misspelled_field_eval 2 "neither \"instruction\"" -- \
  "$spartan" eval --model "$dir/base" --tokenizer "$tok" --data d.jsonl
allow runs; given eval 'for i in $(seq 1 40); do echo "line $i: the quick brown fox"; done > d.txt'
case_ data.alpaca_format_on_text 1 "not valid JSON.*d.txt" -- "${train[@]}" --set data.path=d.txt --set data.format=alpaca
given eval 'for i in $(seq 1 40); do echo "line $i: the quick brown fox"; done > d.txt'
case_ data.alpaca_format_on_text_eval 1 "not valid JSON.*d.txt" -- \
  "$spartan" eval --model "$dir/base" --tokenizer "$tok" --data d.txt --format alpaca
allow runs
case_ data.seq_len_cuts_every_response 2 "no training sequence keeps a token of a response" -- "${train[@]}" --set data.seq_len=4
allow runs; given eval '{ good; echo "{\"instruction\": \"a\", \"output\": "; good; } > d.jsonl'
case_ data.malformed_later_record 1 "not valid JSON.*d.jsonl, record 2[01]" -- "${train[@]}" --set data.path=d.jsonl
allow runs; given eval '{ echo "["; good | sed "s/\$/,/"; } > d.json'
case_ data.json_array_unterminated 1 "d.json" -- "${train[@]}" --set data.path=d.json

# ---- checkpoints and manifests: each refused on resume and by `ckpt info` --------------------
# ck NAME PATTERN SETUP...: the copied run, damaged by SETUP, is refused by both.
ck() {
  local name=$1 pattern=$2; shift 2
  given "$@"; case_ "checkpoint.$name.resume" 1 "$pattern" -- "${resume[@]}"
  given "$@"; case_ "checkpoint.$name.info" 1 "$pattern" -- "$spartan" ckpt info runs/r
}
m='step-00000004/manifest.json'
ck manifest_not_json "manifest.json is not valid JSON" eval 'run_copy && file $ckpt/manifest.json "{\"format_version\": 1,"'
ck format_version_7 "format_version.*$m" tamper 'd["format_version"] = 7'
# A dtype edit may be caught by the manifest's checksum or by the shard's stored type.
ck mask_dtype_float32 "step-00000004/(manifest.json|shard-pp00-tp00.h5)" tamper 'd["tensors"]["masks/'$q0'"]["dtype"] = "float32"'
ck params_dtype_int64 "step-00000004/(manifest.json|shard-pp00-tp00.h5)" tamper 'd["tensors"]["'$lora'"]["dtype"] = "int64"'
ck state_step_lowered "$m" tamper 'd["state"]["step"] = 2'
ck sampler_step_reset "$m" tamper 'd["state"]["sampler_step"] = 0'
ck adam_steps_changed "$m" tamper 'd["state"]["adam_steps"] = 7'
ck top_level_step_changed "$m" tamper 'd["step"] = 3'
ck topology_tp_changed "$m" tamper 'd["topology"]["tp"] = 2'
ck shard_begin_negative "$m" tamper 'd["tensors"]["'$lora'"]["shards"][0]["begin"] = -4'
ck rng_removed "$m" tamper 'del d["tensors"]["rng/pp0"]'
ck params_entry_removed "$m" tamper 'del d["tensors"]["'$lora'"]'
ck sampler_epoch_missing "$m" tamper 'del d["state"]["sampler_epoch"]'
ck step_is_a_string "$m" tamper 'd["step"] = "four"'
ck no_complete_step "no step folder holds a complete one" \
  eval 'run_copy && echo step-00000009 > runs/r/checkpoints/latest && rm runs/r/checkpoints/*/manifest.json'
ck shard_truncated "step-00000004/shard-pp00-tp00.h5" \
  eval 'run_copy && truncate -s 50000 $ckpt/shard-pp00-tp00.h5'

# ---- merge -----------------------------------------------------------------------------------
merge=("$spartan" merge --run runs/r)
given eval 'run_copy && mkdir mine && file mine/notes.txt "my notes\n"'
case_ merge.out_not_empty 2 "the output folder is not empty, mine, .*--force" -- "${merge[@]}" --out mine
# The run's own copy of the base model, so that a merge that overwrote it would spoil this case only.
given eval 'run_copy && cp -a "$dir/base" base && sed -i "s#$dir/base#$PWD/base#" runs/r/config.resolved.toml'
case_ merge.out_is_base 2 "the output folder is the base model folder" -- "${merge[@]}" --out base
given run_copy
case_ merge.out_is_run 2 "the output folder is the run" -- "${merge[@]}" --out runs/r
given run_copy
case_ merge.out_contains_run 2 "the output folder contains the run" -- "${merge[@]}" --out runs
given run_copy
case_ merge.out_is_tokenizer 2 "(is|contains) the tokenizer|not a folder" -- "${merge[@]}" --out "$tok"
given eval 'run_copy && rm -r runs/r/checkpoints'
case_ merge.no_checkpoint 2 "the run has no checkpoint" -- "${merge[@]}" --out new
given run_copy
case_ merge.missing_step 1 "step-00000003" -- "${merge[@]}" --step 3 --out new
given tamper 'd["tensors"]["'$lora'"]["dtype"] = "int64"'
case_ merge.tampered_manifest 1 "step-00000004/(manifest.json|shard-pp00-tp00.h5)" -- "${merge[@]}" --out new

echo "$cases cases, $failures failed"
((failures == 0))
