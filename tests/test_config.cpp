// Configuration: defaults, round trip, and every class of error with its message.
#include <gtest/gtest.h>

#include "common/config.h"
#include "common/error.h"

using spartan::Config;
using spartan::parse_config;
using spartan::UsageError;

namespace {

// The message of the UsageError that parsing `text` throws ("" if none).
std::string error_of(const std::string& text) {
  try {
    parse_config(text, "c.toml");
  } catch (const UsageError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, DefaultsFromAnEmptyFile) {
  Config c = parse_config("", "c.toml");
  EXPECT_EQ(c.run.seed, 1234);
  EXPECT_EQ(c.parallel.tp, 1);
  EXPECT_EQ(c.adapter.method, "lora");
  EXPECT_EQ(c.adapter.targets.size(), 7u);
  EXPECT_DOUBLE_EQ(c.optim.lr, 2e-4);
  EXPECT_EQ(c.adapter.sora.threshold, spartan::GateThreshold::official);
  EXPECT_EQ(c.model.dtype, spartan::Precision::automatic);
  EXPECT_EQ(c.model.compute_dtype, spartan::Precision::automatic);
  EXPECT_EQ(c.run.device, spartan::DeviceKind::automatic);
  EXPECT_TRUE(c.sources.empty());
}

// auto is bf16 on a GPU and fp32 on the CPU; a precision the file names stays as it is.
TEST(Config, PrecisionResolvesForTheDevice) {
  using spartan::Precision;
  EXPECT_EQ(spartan::resolved(Precision::automatic, true), Precision::bf16);
  EXPECT_EQ(spartan::resolved(Precision::automatic, false), Precision::fp32);
  EXPECT_EQ(spartan::resolved(Precision::fp16, false), Precision::fp16);
  EXPECT_EQ(spartan::resolved(Precision::fp32, true), Precision::fp32);
  Config c = parse_config("[model]\ndtype = \"bf16\"\n[run]\ndevice = \"cpu\"\n", "c.toml");
  EXPECT_EQ(c.model.dtype, Precision::bf16);
  EXPECT_EQ(c.run.device, spartan::DeviceKind::cpu);
  EXPECT_EQ(spartan::name_of(c.model.dtype), "bf16");
}

// fp16 products without loss scaling underflow; the base may be held in fp16.
TEST(Config, Fp16ComputeIsRefusedWithTheKey) {
  try {
    parse_config("[model]\ncompute_dtype = \"fp16\"\n", "c.toml");
    FAIL() << "fp16 compute accepted";
  } catch (const spartan::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("scaled loss"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("c.toml:2"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(parse_config("[model]\ndtype = \"fp16\"\n", "c.toml"));
}

TEST(Config, ValuesAndSourcePositions) {
  Config c = parse_config(
      "[optim]\nlr = 1\nglobal_batch_size = 16\n\n[adapter]\nmethod = \"spp\"\n"
      "targets = [\"q\", \"v\"]\n[adapter.sora]\nlambda2 = 0.001\n[parallel]\npp_split = [1, 3]\n"
      "pp = 2\n",
      "c.toml");
  EXPECT_DOUBLE_EQ(c.optim.lr, 1.0);  // an integer is accepted where a float is expected
  EXPECT_EQ(c.optim.global_batch_size, 16);
  EXPECT_EQ(c.adapter.method, "spp");
  EXPECT_EQ(c.adapter.targets, (std::vector<std::string>{"q", "v"}));
  EXPECT_DOUBLE_EQ(c.adapter.sora.lambda2, 1e-3);
  EXPECT_EQ(c.parallel.pp_split, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(c.where("optim.global_batch_size"), "c.toml:3:21");
  EXPECT_EQ(c.where("run.seed"), "c.toml (default, key not set)");
}

TEST(Config, ResolvedTomlReadsBackToTheSameValues) {
  Config a = parse_config(
      "[run]\nname = \"x \\\"quoted\\\"\"\n[optim]\nlr = 3.5e-5\n"
      "[data]\nheld_out_fraction = 0.1\n",
      "c.toml");
  std::string text = spartan::to_toml(a);
  Config b = parse_config(text, "resolved.toml");
  EXPECT_EQ(spartan::to_toml(b), text);
  EXPECT_EQ(b.run.name, "x \"quoted\"");
  EXPECT_DOUBLE_EQ(b.optim.lr, 3.5e-5);
}

TEST(Config, ExplainListsEveryKeyWithDefault) {
  std::string e = spartan::explain_config();
  for (const char* needle : {"[run]", "[adapter.sora]", "[adapter.spp]", "[prune]", "[eval]",
                             "lambda2", "float", "default 0.0003", "official | soft | lr_scaled",
                             "global_batch_size", "array of strings", "default [\"q\", \"k\""})
    EXPECT_NE(e.find(needle), std::string::npos) << needle;
}

TEST(ConfigErrors, UnknownKeyNamesFileLineAndSuggestsTheKey) {
  EXPECT_EQ(error_of("[optim]\nweight_decay = 0.1\nlrr = 0.1\n"),
            "unknown key 'optim.lrr', c.toml:3:1, did you mean 'optim.lr'? (`spartan config "
            "--explain` lists the keys)");
}

TEST(ConfigErrors, UnknownSection) {
  EXPECT_EQ(error_of("[trainer]\nlr = 1\n"),
            "unknown section 'trainer', c.toml:1:2, see `spartan config --explain` for the keys");
}

TEST(ConfigErrors, SectionWrittenAsValue) {
  EXPECT_EQ(error_of("optim = 3\n"),
            "'optim' is a section and must be a table, c.toml:1:1, write it as [optim]");
}

TEST(ConfigErrors, WrongType) {
  EXPECT_EQ(error_of("[parallel]\ntp = \"2\"\n"),
            "key 'parallel.tp' must be an integer, got string, c.toml:2:6, fix the value's type "
            "(see `spartan config --explain`)");
  EXPECT_EQ(error_of("[parallel]\ntp = 2.0\n"),
            "key 'parallel.tp' must be an integer, got floating-point, c.toml:2:6, fix the "
            "value's type (see `spartan config --explain`)");
  EXPECT_EQ(error_of("[adapter]\ntargets = [\"q\", 3]\n"),
            "key 'adapter.targets' must be an array of strings, got integer, c.toml:2:17, fix "
            "the value's type (see `spartan config --explain`)");
  EXPECT_EQ(error_of("[data]\npack = 1\n"),
            "key 'data.pack' must be a bool, got integer, c.toml:2:8, fix the value's type (see "
            "`spartan config --explain`)");
}

TEST(ConfigErrors, OutOfRange) {
  EXPECT_EQ(error_of("[optim]\nlr = -0.1\n"),
            "key 'optim.lr' = -0.1 is out of range, c.toml:2:6, use a value > 0");
  EXPECT_EQ(error_of("[prune]\nsparsity = 1.0\n"),
            "key 'prune.sparsity' = 1.0 is out of range, c.toml:2:12, use a value (0, 1)");
  EXPECT_EQ(error_of("[parallel]\ntp = 0\n"),
            "key 'parallel.tp' = 0 is out of range, c.toml:2:6, use a value >= 1");
  EXPECT_EQ(error_of("[optim]\nlr = nan\n"),
            "key 'optim.lr' = nan is out of range, c.toml:2:6, use a value > 0");
  EXPECT_EQ(error_of("[optim]\nlr = inf\n"),
            "key 'optim.lr' = inf is out of range, c.toml:2:6, use a value > 0");
  EXPECT_EQ(error_of("[optim]\ngrad_clip = inf\n"),
            "key 'optim.grad_clip' = inf is out of range, c.toml:2:13, use a value >= 0");
}

TEST(ConfigErrors, NotAnAllowedChoice) {
  EXPECT_EQ(error_of("[adapter]\nmethod = \"qlora\"\n"),
            "key 'adapter.method' = \"qlora\" is not allowed, c.toml:2:10, use one of: lora | sora "
            "| spp | ia3 | houlsby | compacter | tiny_attention | prompt | prefix | full");
  EXPECT_EQ(
      error_of("[prune]\ntargets = [\"q\", \"lm_head\"]\n"),
      "key 'prune.targets' = \"lm_head\" is not allowed, c.toml:2:17, use one of: q | k | v | "
      "o | gate | up | down");
}

TEST(ConfigErrors, SyntaxError) {
  std::string e = error_of("[optim]\nlr = = 3\n");
  EXPECT_EQ(e.rfind("TOML syntax error: ", 0), 0u) << e;
  EXPECT_NE(e.find("c.toml:2:"), std::string::npos) << e;
}

TEST(ConfigErrors, InconsistentValuesNameTheKey) {
  EXPECT_EQ(error_of("[optim]\nglobal_batch_size = 10\nmicro_batch_size = 2\n[parallel]\ndp = 2\n"),
            "optim.global_batch_size = 10 is not a multiple of micro_batch_size x dp = 2 x 2, "
            "c.toml:2:21 (key 'optim.global_batch_size'), make the global batch a multiple of "
            "micro_batch_size x parallel.dp");
  EXPECT_EQ(error_of("[parallel]\npp = 2\npp_split = [4]\n[optim]\nglobal_batch_size = 4\n"),
            "parallel.pp_split has 1 entries but parallel.pp = 2, c.toml:3:12 (key "
            "'parallel.pp_split'), give one layer count per pipeline stage, or leave it empty "
            "for an even split");
  EXPECT_EQ(error_of("[parallel]\npp = 4\n[optim]\nglobal_batch_size = 2\n"),
            "optim.global_batch_size = 2 gives 2 micro-batches per step and pipeline, fewer than "
            "parallel.pp = 4, c.toml:4:21 (key 'optim.global_batch_size'), use "
            "global_batch_size >= pp x micro_batch_size x dp so the 1F1B pipeline can fill");
  EXPECT_EQ(error_of("[model.init]\nhidden_size = 100\nnum_heads = 8\n"),
            "model.init.hidden_size = 100 does not split into 8 heads of even size, c.toml:3:13 "
            "(key 'model.init.num_heads'), choose num_heads so that hidden_size / num_heads is an "
            "even integer");
  EXPECT_NE(error_of("[prune]\npattern = \"4:2\"\n").find("neither unstructured nor N:M"),
            std::string::npos);
  EXPECT_NE(error_of("[adapter]\ntargets = [\"q\", \"q\"]\n").find("names a projection twice"),
            std::string::npos);
  EXPECT_EQ(error_of("[prune]\npattern = \"2:4\"\n"), "");
}

TEST(ConfigErrors, HeadsNotDivisibleByTensorParallelSize) {
  Config c = parse_config("[parallel]\ntp = 3\n", "c.toml");
  spartan::ModelShape shape{32000, 32, 32, 8, "m/config.json"};
  try {
    spartan::validate_against_model(c, shape);
    FAIL() << "expected an error";
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(),
                 "parallel.tp = 3 does not divide the 32 attention heads (model shape from "
                 "m/config.json), c.toml:2:6 (key 'parallel.tp'), choose a tensor-parallel size "
                 "that divides the number of heads");
  }
  // KV heads replicated when tp is a multiple of them; vocabulary must still divide.
  Config ok = parse_config("[parallel]\ntp = 16\n", "c.toml");
  spartan::validate_against_model(ok, {32000, 32, 32, 8, "m"});
  Config bad_vocab = parse_config("[parallel]\ntp = 16\n", "c.toml");
  EXPECT_THROW(spartan::validate_against_model(bad_vocab, {32001, 32, 32, 8, "m"}), UsageError);
  Config bad_kv = parse_config("[parallel]\ntp = 16\n", "c.toml");
  EXPECT_THROW(spartan::validate_against_model(bad_kv, {32000, 32, 32, 6, "m"}), UsageError);
  Config bad_pp = parse_config(
      "[parallel]\npp = 4\npp_split = [1, 1, 1, 1]\n[optim]\nglobal_batch_size = 4\n", "c.toml");
  EXPECT_THROW(spartan::validate_against_model(bad_pp, {32000, 8, 32, 8, "m"}), UsageError);
}

TEST(ConfigOverrides, SetKeysOnTopOfTheFile) {
  Config c =
      parse_config("[optim]\nlr = 0.1\n", "c.toml",
                   {"optim.lr=3e-4", "prune.method=sparsegpt", "adapter.targets=[\"q\", \"v\"]",
                    "model.init.num_layers=2", "data.pack=false", "run.name=two words"});
  EXPECT_DOUBLE_EQ(c.optim.lr, 3e-4);
  EXPECT_EQ(c.prune.method, spartan::PruneMethod::sparsegpt);  // a bare word is a string
  EXPECT_EQ(c.adapter.targets, (std::vector<std::string>{"q", "v"}));
  EXPECT_EQ(c.model.init.num_layers, 2);
  EXPECT_FALSE(c.data.pack);
  EXPECT_EQ(c.run.name, "two words");
  EXPECT_EQ(c.where("optim.lr"), "--set optim.lr=3e-4");
}

TEST(ConfigOverrides, BadOverridesNameTheSet) {
  try {
    parse_config("", "c.toml", {"prune.sparsity=1.5"});
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(),
                 "key 'prune.sparsity' = 1.5 is out of range, --set prune.sparsity=1.5, use "
                 "a value (0, 1)");
  }
  EXPECT_THROW(parse_config("", "c.toml", {"optim.lrr=1"}), UsageError);  // unknown key
  EXPECT_THROW(parse_config("", "c.toml", {"no_equals_sign"}), UsageError);
  EXPECT_THROW(parse_config("", "c.toml", {"optim.lr.x=1"}), UsageError);  // through a value
}
