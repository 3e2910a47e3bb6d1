"""``model.generate(custom_generate=...)`` (transformers_hook.py), on a tiny model with the bundled tokenizer:
the same tokens as the API, and every setting greedy decoding cannot honour refused by name."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper

from directer import Directer, UsageError, custom_generate

from bundled_tokenizer import load_bundled_tokenizer, tiny_chat_model

HAIKU, NO_COMMAS = "Write a haiku about autumn.", "Do not use any commas."


@pytest.fixture(scope="module")
def tokenizer():
    return load_bundled_tokenizer(padding_side="left")


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_chat_model(tokenizer)


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


@pytest.mark.parametrize("setting, name", [
    ({"num_beams": 2}, "num_beams=2"), ({"do_sample": True, "typical_p": 0.5}, "typical_p=0.5"),
    ({"repetition_penalty": 1.3}, "repetition_penalty=1.3"), ({"no_repeat_ngram_size": 2}, "no_repeat_ngram_size=2"),
    ({"min_new_tokens": 3}, "min_new_tokens=3"),
])
def test_settings_greedy_decoding_cannot_honour_are_refused(model, tokenizer, setting, name):
    enc = tokenizer([HAIKU], return_tensors="pt")
    with pytest.raises(UsageError, match=name) as exc_info:
        model.generate(**enc, max_new_tokens=4, custom_generate=custom_generate, instruction_spans=[(1, 4)], **setting)
    assert "\n" not in str(exc_info.value) and "min_length" not in str(exc_info.value)


def test_logits_processors_are_refused_and_model_defaults_warned(model, tokenizer):
    enc = tokenizer([HAIKU], return_tensors="pt")
    kw = dict(max_new_tokens=4, custom_generate=custom_generate, instruction_spans=[(1, 4)])
    with pytest.raises(UsageError, match="TemperatureLogitsWarper"):
        model.generate(**enc, logits_processor=LogitsProcessorList([TemperatureLogitsWarper(0.5)]), **kw)
    greedy_out = model.generate(**enc, **kw)
    model.generation_config.repetition_penalty = 1.2  # the model's own default, not the caller's
    try:
        with pytest.warns(UserWarning, match="generation config sets repetition_penalty=1.2"):
            out = model.generate(**enc, **kw)
    finally:
        model.generation_config.repetition_penalty = 1.0
    assert torch.equal(out, greedy_out)  # ignored, as the warning says


def test_sampling_takes_the_generation_config_and_matches_the_api(d):
    """do_sample=True with temperature, top_k and top_p: the same tokens as the API with those settings
    and the same seed; without seed=, torch.manual_seed before the call reproduces it."""
    prepared = [d.prepare(HAIKU, NO_COMMAS)]
    p = prepared[0]
    expected = d.generate_prepared(prepared, config=d._config(6, {"temperature": 0.8, "top_k": 40, "top_p": 0.9,
                                                                   "seed": 3}))[0].token_ids
    ids = torch.tensor([p.input_ids])
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=6, custom_generate=custom_generate,
              instruction_spans=[(p.spans[0].start, p.spans[0].end)], do_sample=True, temperature=0.8, top_k=40,
              top_p=0.9, pad_token_id=d.tokenizer.pad_token_id)
    out = d.model.generate(ids, seed=3, **kw)
    assert out[0, ids.shape[1]:].tolist()[: len(expected)] == expected
    torch.manual_seed(11)
    first = d.model.generate(ids, **kw)
    torch.manual_seed(11)
    assert torch.equal(d.model.generate(ids, **kw), first)
