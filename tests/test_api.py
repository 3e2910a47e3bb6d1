"""The Python API (api.py), on a tiny model with the bundled tokenizer."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from directer import Directer, GenerationResult, UsageError, custom_generate

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


def test_generate_returns_a_full_result(d):
    r = d.generate(HAIKU, NO_COMMAS)
    assert isinstance(r, GenerationResult)
    assert r.method == "directer" and r.mode == "paper" and r.model == "tiny-llama"
    assert r.prompt.endswith("<|im_start|>assistant\n") and f"{HAIKU}\n\n{NO_COMMAS}" in r.prompt
    (start, end), = r.instruction_token_spans
    assert d.tokenizer.decode(r.prompt_token_ids[start:end]).strip() == NO_COMMAS
    assert len(r.token_ids) == len(r.trace) == r.stats.steps <= 6
    assert sorted(r.ranking) == [0, 1, 2] and len(r.ranking_scores) == 3
    assert r.text == d.tokenizer.decode(r.token_ids, skip_special_tokens=True)
    record = r.to_dict()
    assert record["instruction_token_spans"] == [[start, end]] and isinstance(record["stats"]["accepted"], dict)


def test_alpha_one_equals_model_generate(d):
    r = d.generate(HAIKU, NO_COMMAS, alpha=1.0)
    ids = torch.tensor([r.prompt_token_ids])
    out = d.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
                           pad_token_id=d.tokenizer.pad_token_id)
    assert r.token_ids == out[0, ids.shape[1]:].tolist()


def test_batch_equals_one_at_a_time(d):
    prompts = [HAIKU, "Name three rivers.", [{"role": "user", "content": "Say hi. Use capital letters."}]]
    instructions = [NO_COMMAS, ["Answer in lowercase.", "Be brief."], "Use capital letters."]
    batch = d.generate(prompts, instructions, batch_size=3)
    single = [d.generate(p, i) for p, i in zip(prompts, instructions)]
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]
    assert [r.instruction_token_spans for r in batch] == [r.instruction_token_spans for r in single]
    assert len(batch[1].instruction_token_spans) == 2


@pytest.mark.parametrize("method", ["pasta:filter=1", "spotlight", "static:alpha=3", "directer:ranking=reversed"])
def test_baselines_through_the_api_and_custom_generate(d, method):
    prepared = [d.prepare(HAIKU, NO_COMMAS), d.prepare("Name three rivers.", "Answer in lowercase.")]
    results = d.generate_prepared(prepared, config=d._config(6, {"method": method}))
    assert [r.method for r in results] == [method, method]
    single = [d.generate(HAIKU, NO_COMMAS, method=method, max_new_tokens=6)]
    assert single[0].token_ids == results[0].token_ids
    enc = d.tokenizer.pad({"input_ids": [p.input_ids for p in prepared]}, return_tensors="pt")
    width = enc["input_ids"].shape[1]
    spans = [[(width - len(p.input_ids) + s.start, width - len(p.input_ids) + s.end) for s in p.spans] for p in prepared]
    out = d.model.generate(**enc, max_new_tokens=6, custom_generate=custom_generate, instruction_spans=spans,
                           method=method, pad_token_id=d.tokenizer.pad_token_id)
    for row, r in zip(out[:, width:].tolist(), results):
        assert row[: len(r.token_ids)] == r.token_ids


def test_float16_with_large_alpha_warns_and_upcasts(tokenizer):
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    m = AutoModelForCausalLM.from_config(cfg).to(torch.float16).eval()
    with pytest.warns(UserWarning, match="float16"):
        Directer(m, tokenizer, alpha=100.0)
    assert m.dtype == torch.float32  # on CPU; bfloat16 on a GPU that supports it
    m16 = AutoModelForCausalLM.from_config(cfg).to(torch.float16).eval()
    Directer(m16, tokenizer, alpha=5.0)  # small alpha: no overflow risk, left as is
    assert m16.dtype == torch.float16


def test_bad_input_is_a_usage_error(d):
    with pytest.raises(UsageError, match="no instruction"):
        d.generate(HAIKU)
    assert d.generate(HAIKU, method="none").stats.trials == 0  # none needs no instruction
    with pytest.raises(UsageError, match="context length"):
        d.generate(HAIKU, NO_COMMAS, max_new_tokens=250)
    with pytest.raises(UsageError, match="unknown option"):
        d.generate(HAIKU, NO_COMMAS, alpah=3)
    with pytest.raises(UsageError, match="one entry per prompt"):
        d.generate([HAIKU, HAIKU], [NO_COMMAS, NO_COMMAS, NO_COMMAS])
    with pytest.raises(UsageError, match="alpha"):
        d.generate(HAIKU, NO_COMMAS, alpha=0)


def test_a_kv_cache_budget_refuses_what_cannot_fit_and_decodes_the_rest_unchanged(model, tokenizer, d):
    for bad in ({"cache_tokens": 0}, {"cache_tokens": 2.5}, {"cache_memory": 0.0}, {"cache_memory": 2}):
        with pytest.raises(UsageError, match=next(iter(bad))):
            Directer(model, tokenizer, **bad)
    free = d.generate([HAIKU, HAIKU + " Be brief."], [NO_COMMAS, NO_COMMAS])
    need = max(len(r.prompt_token_ids) for r in free) + 6
    held = Directer(model, tokenizer, max_new_tokens=6, cache_tokens=need)
    assert [r.token_ids for r in held.generate([HAIKU, HAIKU + " Be brief."], [NO_COMMAS, NO_COMMAS])] == \
        [r.token_ids for r in free]
    with pytest.raises(UsageError, match=rf"needs {need + 1} cache columns.*holds {need} \(--cache-tokens {need}\)"):
        held.generate(HAIKU + " Be brief.", NO_COMMAS, max_new_tokens=7)


def test_the_system_message_as_the_instruction(d):
    by_role = d.generate(HAIKU, "system", system=NO_COMMAS)
    assert by_role.instructions == [NO_COMMAS] and by_role.appended_instructions == []
    by_text = d.generate(HAIKU, NO_COMMAS, system=NO_COMMAS)
    assert by_role.token_ids == by_text.token_ids
    assert by_role.instruction_token_spans == by_text.instruction_token_spans
    chat = [{"role": "system", "content": NO_COMMAS}, {"role": "user", "content": HAIKU}]
    both = d.generate([chat, chat], "system")  # one entry for every prompt
    assert [r.token_ids for r in both] == [by_role.token_ids] * 2
    with pytest.raises(UsageError, match="the prompt has none"):
        d.generate(HAIKU, "system")


def test_the_system_message_as_the_instruction_without_a_chat_template(model, tokenizer):
    from bundled_tokenizer import Wrapped

    plain = Directer(model, Wrapped(tokenizer, "none", chat_template=None), max_new_tokens=6, model_name="tiny")
    with pytest.warns(UserWarning, match="no chat template"):
        r = plain.generate(HAIKU, "system", system=NO_COMMAS)
    assert r.prompt.startswith(NO_COMMAS) and r.instructions == [NO_COMMAS]
    (start, end), = r.instruction_token_spans
    assert tokenizer.decode(r.prompt_token_ids[start:end]).strip() == NO_COMMAS


def test_auto_instructions_find_the_constraint_sentence(d):
    prompt = "Write a short poem about the sea. Do not use any commas in your response."
    r = d.generate(prompt, "auto")
    assert r.instructions == ["Do not use any commas in your response."]
    (start, end), = r.instruction_token_spans
    assert d.tokenizer.decode(r.prompt_token_ids[start:end]).strip() == r.instructions[0]
    # No separable constraint: no span, decoded plainly, and the result says so (never a silent guess).
    nothing = d.generate("Write a short poem about the sea.", "auto")
    assert nothing.instructions == [] and nothing.instruction_token_spans == []
    assert nothing.notes == ["no instruction found; nothing steered"] and nothing.method == "none"
    assert nothing.token_ids == d.generate("Write a short poem about the sea.", method="none").token_ids
    both = d.generate(["Write a short poem about the sea.", prompt], "auto")
    assert [r.method for r in both] == ["none", "directer"] and both[1].token_ids == r.token_ids


@pytest.mark.parametrize("method", ["none", "directer", "static:alpha=3:filter=1", "pasta:filter=1",
                                    "spotlight:filter=1", "instaboost"])
def test_perplexity_comes_from_the_raw_passes(d, method):
    """The raw model's log-probabilities recorded while decoding equal one scoring pass over prompt and
    response (a batch with left padding included); a method that runs no raw model reports none."""
    from directer.evaluation.quality import perplexities

    prompts = [(HAIKU, NO_COMMAS), ("Describe the sea in two sentences.", "Use only lowercase letters.")]
    results = d.generate([p for p, _ in prompts], [[i] for _, i in prompts], method=method, max_new_tokens=8)
    if method == "instaboost":  # the steered stream alone: no raw distribution to score against
        assert all(r.raw_logprobs is None and r.perplexity is None for r in results)
        return
    direct = perplexities(d.model, [r.prompt_token_ids for r in results], [r.token_ids for r in results])
    for r, x in zip(results, direct):
        assert len(r.raw_logprobs) == len(r.token_ids)
        assert r.perplexity == pytest.approx(x, rel=1e-4)
        assert r.to_dict()["perplexity"] == r.perplexity


def test_ignore_eos_decodes_exactly_max_new_tokens(d):
    first = d.generate(HAIKU, NO_COMMAS, method="none").token_ids[0]
    saved = d.model.generation_config.eos_token_id
    d.model.generation_config.eos_token_id = [first]  # the first token now ends the response
    try:
        stopped = d.generate(HAIKU, NO_COMMAS, method="none")
        full = d.generate(HAIKU, NO_COMMAS, method="none", ignore_eos=True)
    finally:
        d.model.generation_config.eos_token_id = saved
    assert stopped.token_ids == [first] and stopped.finish_reason == "eos"
    assert len(full.token_ids) == 6 and full.token_ids[0] == first and full.finish_reason == "length"


def test_results_report_the_settings_they_were_decoded_with(d):
    r = d.generate(HAIKU, NO_COMMAS, method="static:alpha=3")
    assert r.alpha == 3.0 and r.parameters["alpha"] == 3.0 and r.to_dict()["parameters"]["alpha"] == 3.0
    r = d.generate(HAIKU, NO_COMMAS, method="directer:beta=0.3")
    assert r.beta == 0.3 and r.alpha == 100.0 and r.parameters["beta"] == 0.3
    r = d.generate(HAIKU, NO_COMMAS, method="pasta", plausibility_filter=True)
    assert r.parameters["filter"] is True and r.parameters["alpha_p"] == 0.01
    assert r.alpha is None and r.beta == 0.5  # PASTA scales no keys: no alpha is reported as if it had
    plain = d.generate(HAIKU, NO_COMMAS, method="none")
    assert plain.alpha is None and plain.beta is None and plain.parameters == {}
    assert r.raw_logprobs is not None  # the filter runs the raw model beside the steered stream
    assert d.generate(HAIKU, NO_COMMAS, method="pasta").raw_logprobs is None
