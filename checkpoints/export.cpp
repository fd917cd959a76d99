#include "checkpoints/export.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <string>

#include "adapters/adapter.h"
#include "adapters/prefix.h"
#include "checkpoints/merge.h"
#include "checkpoints/peft.h"
#include "common/error.h"
#include "common/files.h"
#include "model/hf_config.h"
#include "model/inspect.h"

namespace spartan::checkpoints {
namespace {

using adapters::Export;

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  va_list args, again;
  va_start(args, fmt);
  va_copy(again, args);
  std::string out(static_cast<size_t>(std::max(0, std::vsnprintf(nullptr, 0, fmt, args))), '\0');
  va_end(args);
  std::vsnprintf(out.data(), out.size() + 1, fmt, again);
  va_end(again);
  return out;
}

std::string ranks_note(const adapters::Method& m, int64_t kept, int64_t total) {
  if (total <= 0) return "";
  return format("%s kept %lld of %lld ranks; exported as LoRA (PEFT rank_pattern)", m.title(),
                static_cast<long long>(kept), static_cast<long long>(total));
}

// A whole model as a HF folder with the run's tokenizer; returns the folder.
std::string save_model(model::Llama& llama, const std::string& tokenizer,
                       const std::string& folder) {
  make_dirs(folder);
  llama->save(folder);
  copy_file(tokenizer, folder + "/tokenizer.model");
  return folder;
}

// The run's own output folders are replaced whole; the run's evaluation is the check.
MergeOptions replace_unchecked() {
  MergeOptions o;
  o.check_logits = false;
  o.force = true;
  return o;
}

}  // namespace

Exported export_model(const Config& c, model::Llama& llama, const std::string& tokenizer,
                      const std::string& run_dir) {
  const adapters::Method& method = adapters::method(c.adapter.method);
  const std::string adapter = run_dir + "/adapter";
  Exported e;
  switch (method.exports()) {
    case Export::model_folder:
      if (method.keeps_base_zeros(c.adapter))
        e.note = format("trained with the base's zeros kept: %.4f of the targeted weights are zero",
                        model::projection_zeros(llama, method.targets(c.adapter)).fraction());
      e.saved = save_model(llama, tokenizer, run_dir + "/model");
      return e;
    case Export::merged_model: {
      // SPP keeps every base zero; a kept weight whose factor 1 + s·R(W_α)·W_β is exactly 0
      // becomes a zero as well, in the adapted and the merged model alike: counted, not refused.
      adapters::ZeroChanges changes;
      if (method.keeps_zero_pattern()) {
        changes = adapters::zero_pattern_changes(llama);
        if (changes.lost != 0)
          throw Error(std::string("the merged ") + method.title() + " weights lost " +
                          std::to_string(changes.lost) + " of the base's zeros",
                      run_dir, "report this as a bug: the merge must keep the base's zero pattern");
      }
      adapters::merge_into_base(llama, c.adapter.merge);
      std::string kept;
      if (method.keeps_zero_pattern())
        kept = changes.gained == 0 ? ", the same positions as before training"
                                   : format(
                                         ", every zero of the base kept and %lld weights the "
                                         "adapter made exactly zero",
                                         static_cast<long long>(changes.gained));
      e.note = format(
          "merged %s into the base: %.4f of the targeted weights are zero%s", method.title(),
          model::projection_zeros(llama, method.targets(c.adapter)).fraction(), kept.c_str());
      e.saved = save_model(llama, tokenizer, run_dir + "/merged");
      return e;
    }
    case Export::peft_lora: {
      const adapters::Ranks ranks = adapters::compact_adapters(llama);
      e.note = ranks_note(method, ranks.kept, ranks.total);
      save_peft_lora(adapter, llama, c.adapter, c.model.path);
      break;
    }
    case Export::peft_ia3:
      save_peft_ia3(adapter, llama, c.model.path);
      break;
    case Export::peft_prompt:
      save_peft_prompt(adapter, llama, c.model.path);
      break;
    case Export::peft_prefix:
      save_peft_prefix(adapter, llama, c.model.path);
      break;
    case Export::spartan_block:
      save_block_adapter(adapter, llama, c.adapter, c.model.path);
      break;
  }
  e.saved = adapter;
  if (method.masked_merge(c.adapter)) {  // LoRA*: merged, then the base's zeros imposed again
    adapters::merge_into_base(llama, MergeForm::masked);
    e.saved += " and " + save_model(llama, tokenizer, run_dir + "/merged");
  }
  return e;
}

bool exports_from_checkpoint(const adapters::Method& method) {
  return method.site() == adapters::Site::base || method.site() == adapters::Site::projections;
}

Exported export_from_checkpoint(const Config& c, const std::string& run_dir) {
  const adapters::Method& method = adapters::method(c.adapter.method);
  Exported e;
  switch (method.exports()) {
    case Export::model_folder:
    case Export::merged_model: {
      e.saved = run_dir + (method.exports() == Export::model_folder ? "/model" : "/merged");
      const auto report = merge_run(run_dir, -1, e.saved, replace_unchecked());
      if (method.keeps_zero_pattern())
        e.note = format(
            "merged %s into the base (streamed from %s): each of the %zu merged weights keeps "
            "exactly the zeros of its base weight",
            method.title(), report.checkpoint.c_str(), report.merged.size());
      return e;
    }
    case Export::peft_lora:
    case Export::peft_ia3: {
      int64_t total = 0;
      const int64_t kept = export_adapter(run_dir, -1, run_dir + "/adapter", &total);
      e.note = ranks_note(method, kept, total);
      e.saved = run_dir + "/adapter";
      if (method.masked_merge(c.adapter)) {
        merge_run(run_dir, -1, run_dir + "/merged", replace_unchecked());
        e.saved += " and " + run_dir + "/merged";
      }
      return e;
    }
    default:
      throw Error(std::string(method.title()) + " is not exported from a checkpoint", run_dir,
                  "report this as a bug");
  }
}

Exported export_trained(const Config& c, const model::NamedTensors& trained,
                        const std::string& run_dir) {
  const adapters::Method& method = adapters::method(c.adapter.method);
  const model::LlamaArch arch = model::read_hf_config(c.model.path);
  auto tensor = [&](const std::string& name) {
    for (const auto& [n, t] : trained)
      if (n == name) return t;
    throw Error("the trained tensor " + name + " did not reach rank 0", run_dir,
                "report this as a bug");
  };
  Exported e;
  e.saved = run_dir + "/adapter";
  switch (method.exports()) {
    case Export::peft_prompt:
      write_peft_prompt(e.saved,
                        tensor(std::string(model::kEmbeddingAdapterName) + ".prompt_embeddings"),
                        arch, c.model.path);
      return e;
    case Export::peft_prefix: {
      auto encoder = adapters::make_prefix_encoder(arch, c.adapter);
      torch::NoGradGuard no_grad;
      for (auto& np : encoder->named_parameters())
        np.value().copy_(tensor(std::string(model::kKvAdapterName) + "." + np.key()));
      write_peft_prefix(e.saved, *encoder, arch, c.model.path);
      return e;
    }
    case Export::spartan_block:
      write_block_adapter(e.saved, trained, c.adapter, c.model.path);
      return e;
    default:
      throw Error(std::string(method.title()) + " is exported from its checkpoint", run_dir,
                  "report this as a bug");
  }
}

}  // namespace spartan::checkpoints
