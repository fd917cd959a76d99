// spartan eval --model DIR [--adapter DIR] --data FILE: perplexity.
//   text / {"text"} JSONL: documents (<s> text </s>) concatenated into one stream, scored in
//     windows of --window tokens every --stride tokens (each token once; see trainer/eval.h);
//   Alpaca instruction data: each record its own row (truncated to --window), only the
//     response and </s> scored.
#include <torch/torch.h>

#include <cstdio>
#include <memory>
#include <string>

#include "checkpoints/peft.h"
#include "common/error.h"
#include "common/launch_env.h"
#include "data/dataset.h"
#include "launcher/commands.h"
#include "launcher/model_shape.h"
#include "model/hf_config.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "parallel/runtime.h"
#include "trainer/eval.h"

namespace spartan::launcher {
namespace {

struct EvalOptions {
  std::string model, adapter, data, tokenizer, format = "auto", dtype = "auto", device = "auto";
  int64_t window = 256, stride = 0, batch = 4;
};

void eval(const EvalOptions& o) {
  if (o.window < 2) throw UsageError("--window must be at least 2", "command line", "");
  const int64_t stride = o.stride > 0 ? o.stride : o.window;
  const parallel::Runtime runtime =
      parallel::make_runtime(*option_named<DeviceKind>(o.device), *option_named<Precision>(o.dtype),
                             Precision::automatic, launcher_local_rank().value_or(0), "--device");
  if (!runtime.cuda()) {  // host memory: on a GPU the weights and activations are not there
    model::MemoryInputs need;
    need.base_dtype_bytes = static_cast<int64_t>(c10::elementSize(runtime.base_dtype));
    need.seq_len = o.window;
    need.micro_batch = o.batch;
    check_memory_fits(model::read_hf_config(o.model), need, 0,
                      o.model + "/config.json with --window and --batch");
  }
  model::Llama llama = model::load_llama(o.model, runtime.base());
  llama->set_compute_dtype(runtime.compute_dtype);
  model::Tokenizer tok(o.tokenizer.empty() ? o.model + "/tokenizer.model" : o.tokenizer);
  model::check_tokenizer_fits(llama->arch(), tok.vocab_size(), tok.path());
  if (!o.adapter.empty()) checkpoints::load_peft_adapter(o.adapter, llama);
  const data::Format format = data::resolve_format(o.data, o.format);
  trainer::EvalResult r;
  std::string how;
  if (format == data::Format::alpaca) {
    std::vector<data::Example> examples;
    for (const auto& rec : data::read_alpaca(o.data))
      examples.push_back(data::tokenize_instruction(tok, rec));
    auto rows = data::make_sequences(examples, o.window, /*pack=*/false, tok.eos_id());
    r = trainer::evaluate_rows(llama, rows, o.batch);
    how = std::to_string(rows.examples) + " instruction records, responses only, " +
          std::to_string(rows.truncated) + " truncated to " + std::to_string(o.window) + " tokens";
  } else {
    std::vector<int64_t> stream;
    for (const auto& doc : data::read_documents(o.data, format)) {
      auto ids = tok.encode(doc, true, true);
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
    r = trainer::evaluate_stream(llama, stream, o.window, stride, o.batch);
    how = "one stream of " + std::to_string(stream.size()) + " tokens, window " +
          std::to_string(o.window) + ", stride " + std::to_string(stride);
  }
  if (r.tokens == 0)
    throw Error("no token to score (" + how + ")", o.data,
                "give --data with text, or instruction records whose responses fit --window");
  std::printf("perplexity %.4f  (loss %.4f over %lld tokens; %s)\n", r.ppl, r.loss,
              static_cast<long long>(r.tokens), how.c_str());
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand("eval",
                                     "perplexity of a model folder (optionally with a "
                                     "PEFT LoRA adapter) on text or instruction data");
  cmd->add_option("--model", o->model, "Hugging Face model folder")->required();
  cmd->add_option("--adapter", o->adapter, "PEFT LoRA adapter folder");
  cmd->add_option("--data", o->data, "text, {\"text\"} JSONL or Alpaca JSON/JSONL")->required();
  cmd->add_option("--tokenizer", o->tokenizer, "tokenizer.model (default: the model folder's)");
  cmd->add_option("--format", o->format, "auto | alpaca | text | jsonl_text")
      ->check(CLI::IsMember({"auto", "alpaca", "text", "jsonl_text"}));
  cmd->add_option("--dtype", o->dtype,
                  "the weights in memory: auto (bf16 on a GPU, fp32 on the CPU) | fp32 | bf16 | "
                  "fp16; products run in bf16 on a GPU, fp32 on the CPU")
      ->check(CLI::IsMember(option_names<Precision>()));
  cmd->add_option("--device", o->device, "auto (a GPU where one is visible) | cpu | cuda")
      ->check(CLI::IsMember(option_names<DeviceKind>()));
  cmd->add_option("--window", o->window, "tokens per window (default 256)");
  cmd->add_option("--stride", o->stride, "tokens between windows (default: the window)");
  cmd->add_option("--batch", o->batch, "windows per forward pass (default 4)");
  cmd->callback([o] { eval(*o); });
}

}  // namespace spartan::launcher
