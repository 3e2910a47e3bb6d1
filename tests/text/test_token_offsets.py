"""Offsets recomputed by incremental decoding (text/token_offsets.py), on the real bundled tokenizer."""

from __future__ import annotations

import pytest

from directer.text import token_offsets
from directer.text.spans import prepare_prompt

from bundled_tokenizer import Wrapped, bundled_tokenizer

NO_COMMAS = "Do not use any commas."


@pytest.fixture(scope="module")
def tok():
    return bundled_tokenizer()


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
