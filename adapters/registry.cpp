// The one place where adapter methods are registered by name. A new method is one line here.
#include <memory>

#include "adapters/block.h"
#include "adapters/full.h"
#include "adapters/ia3.h"
#include "adapters/lora.h"
#include "adapters/method.h"
#include "adapters/prefix.h"
#include "adapters/prompt.h"
#include "adapters/sora.h"
#include "adapters/spp.h"
#include "common/error.h"

namespace spartan::adapters {
namespace {

std::vector<std::unique_ptr<const Method>> registered() {
  std::vector<std::unique_ptr<const Method>> all;
  all.push_back(std::make_unique<LoraMethod>());
  all.push_back(std::make_unique<SoraMethod>());
  all.push_back(std::make_unique<SppMethod>());
  all.push_back(std::make_unique<Ia3Method>());
  all.push_back(std::make_unique<HoulsbyMethod>());
  all.push_back(std::make_unique<CompacterMethod>());
  all.push_back(std::make_unique<TinyAttentionMethod>());
  all.push_back(std::make_unique<PromptMethod>());
  all.push_back(std::make_unique<PrefixMethod>());
  all.push_back(std::make_unique<FullMethod>());
  return all;
}

}  // namespace

const std::vector<const Method*>& methods() {
  static const auto owned = registered();
  static const auto view = [] {
    std::vector<const Method*> v;
    for (const auto& m : owned) v.push_back(m.get());
    return v;
  }();
  return view;
}

const Method* find_method(const std::string& name) {
  for (const Method* m : methods())
    if (name == m->name()) return m;
  return nullptr;
}

const Method& method(const std::string& name) {
  if (const Method* m = find_method(name)) return *m;
  std::string known;
  for (const Method* m : methods()) known += (known.empty() ? "" : ", ") + std::string(m->name());
  throw UsageError("adapter method '" + name + "' is not available in this build",
                   "[adapter] method", "use one of " + known);
}

}  // namespace spartan::adapters
