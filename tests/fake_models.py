"""Stand-ins for the loading and cache tests: a tiny random Llama, a word-level tokenizer, and fake GGUF
conversions (one counting its calls, one that waits for other processes so that their conversions overlap)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

TINY = dict(
    vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def one_line(exc_info: pytest.ExceptionInfo) -> str:
    """The error message, asserting it is a single line (the project's rule for user-facing errors)."""
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message


def tiny_model(config_cls=LlamaConfig, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config_cls(**{**TINY, **overrides}))


def tiny_tokenizer():
    """A word-level tokenizer with an eos token but no pad token (load_model must add one)."""
    vocab = {"<unk>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(30)}}
    backend = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")


class FakeConverter:
    """Stands in for the GGUF conversion: a deterministic tiny Llama, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, source: Path):
        self.calls += 1
        return tiny_model(seed=0), tiny_tokenizer()


def rendezvous_convert(source: Path):
    """A fake conversion for child processes: waits until every party is converting, so they overlap."""
    folder = Path(os.environ["DIRECTER_TEST_RENDEZVOUS"])
    (folder / f"converting-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while len(list(folder.glob("converting-*"))) < int(os.environ["DIRECTER_TEST_PARTIES"]):
        assert time.monotonic() < deadline, "the other process never started converting"
        time.sleep(0.05)
    return tiny_model(seed=0), tiny_tokenizer()


def logits(model, ids=((3, 4, 5, 6),)) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits
