"""Golden fixtures for the tokenizer: a small LLaMA-style sentencepiece model and the token ids
that Hugging Face's LlamaTokenizer gives for texts of ../shared/data.

Writes tests/fixtures/tokenizer/tokenizer.model and tests/fixtures/tokenizer/golden_ids.json:
{"cases": [{"file": "alpaca_en_demo.json", "record": 3, "field": "output", "ids": [...]}, ...]}
The texts themselves are not copied; the C++ test reads them from ../shared/data.
"""
import io
import json
import os
import sys

import sentencepiece as spm
import transformers
from transformers import LlamaTokenizer


def train(data, out):
    # LLaMA's sentencepiece options at a small vocabulary.
    with open(os.path.join(data, "wiki_demo.txt"), encoding="utf-8") as f:
        text = f.read()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_writer=model, model_type="bpe",
        vocab_size=1000, byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, character_coverage=0.99995, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, num_threads=1, max_sentence_length=1 << 20, seed_sentencepiece_size=100000,
        train_extremely_large_corpus=False, minloglevel=2)
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())


def main(data, out):
    os.makedirs(out, exist_ok=True)
    train(data, out)
    # transformers 5 converts the sentencepiece model into its tokenizers-based LlamaTokenizer
    # (protobuf reads the model); BOS is added as LLaMA's tokenizer_config.json asks.
    tok = LlamaTokenizer.from_pretrained(out, legacy=True, add_bos_token=True)
    cases = []
    with open(os.path.join(data, "alpaca_en_demo.json"), encoding="utf-8") as f:
        alpaca = json.load(f)
    for i, rec in enumerate(alpaca[:120]):
        for field in ("instruction", "input", "output"):
            cases.append({"file": "alpaca_en_demo.json", "record": i, "field": field,
                          "ids": tok(rec[field])["input_ids"]})
    with open(os.path.join(data, "c4_demo.jsonl"), encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == 40:
                break
            cases.append({"file": "c4_demo.jsonl", "record": i, "field": "text",
                          "ids": tok(json.loads(line)["text"])["input_ids"]})
    with open(os.path.join(out, "golden_ids.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "cases": cases}, f)
    print(f"tokenizer: {len(cases)} cases, vocab {tok.vocab_size}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
