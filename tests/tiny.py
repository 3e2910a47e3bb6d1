"""Tiny randomly initialised models built from configs, for fast property tests (float32), and the
helpers that decode on them (the continuous engine; reference mode's sequential specification)."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

from directer.engine.requests import DecodeRequest
from directer.methods import make_method

VOCAB = 96
ARCHS = ("llama", "qwen2", "qwen3", "gemma3", "mistral")
NEW = 10  # tokens decoded by the property tests
SPAN = list(range(4, 11))  # the steered prompt positions


def tiny_config(arch: str, layers: int = 4, sliding_window: int = 12):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "qwen3":  # key norm
        return Qwen3Config(head_dim=8, **common)
    if arch == "gemma3":  # key norm, sliding-window layers, scaled embeddings
        types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
        return Gemma3TextConfig(head_dim=8, sliding_window=sliding_window, layer_types=types, **common)
    if arch == "mistral":  # sliding window on every layer
        return MistralConfig(sliding_window=sliding_window, **common)
    raise ValueError(arch)


def tiny_model(arch: str, seed: int = 0, layers: int = 4, attn: str = "eager", **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = tiny_config(arch, layers=layers, **kw)
    config._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attn)
    # Random weights give near-uniform next-token distributions; sharpen them so that greedy choices
    # are stable and the gate sees both confident and uncertain steps.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


def random_prompt(seed: int, length: int = 20) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (length,), generator=g).tolist()


def greedy(model: torch.nn.Module, prompt: list[int], new: int = 10) -> list[int]:
    """``new`` tokens of plain greedy decoding with ``model.generate`` (no end-of-sequence stop)."""
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                         eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def prompts(n: int = 3) -> list[list[int]]:
    # Different lengths, so that batches are left-padded.
    return [random_prompt(seed, 18 + 5 * seed) for seed in range(n)]


def run(model, ps, method="directer", mode="paper", alpha=100.0, beta=0.5, gate=True, batch=True,
        trial_batching="all", positions=None, new=NEW, speculate="never", filt=False, eos=frozenset(), limits=None,
        sampling=None, sample_index=None):
    """Decode prompts ``ps`` with ``method`` (a spec) as the library does: paper mode on the continuous
    engine (all prompts at once, or one at a time), reference mode on its sequential specification."""
    from directer.engine.reference import ReferenceDecoder
    from directer.runner import slots_per_request

    positions = positions or [SPAN] * len(ps)
    meth = make_method(method, alpha=alpha, beta=beta, mode=mode, gate=gate, plausibility_filter=filt)
    reqs = [DecodeRequest(p, pos, max_new_tokens=(limits[i] if limits else None),
                          sample_index=sample_index[i] if sample_index else 0)
            for i, (p, pos) in enumerate(zip(ps, positions))]
    if mode == "reference":
        return ReferenceDecoder(model, meth, max_new_tokens=new, eos_token_ids=eos).run(reqs)
    trials = {"all": "all", "sequential": "first"}[trial_batching]
    per = slots_per_request(meth)

    def engine_run(chunk):
        return run_engine(model, [r.input_ids for r in chunk], method, alpha=alpha, beta=beta, gate=gate,
                          slots=len(chunk) * per, trials=trials, positions=[r.positions for r in chunk], new=new,
                          speculate=speculate, eos=eos, filt=filt, sampling=sampling,
                          limits=[r.max_new_tokens for r in chunk] if limits else None,
                          sample_index=[r.sample_index for r in chunk])
    if batch:
        return engine_run(reqs)
    return [engine_run([r])[0] for r in reqs]


def tokens(outputs) -> list[list[int]]:
    return [o.token_ids for o in outputs]


def assert_same_ranking(a, b, tie: float = 1e-6) -> None:
    """Rankings ``a`` and ``b`` agree: the same scores to 1e-5, and ``a``'s order sorts ``b``'s scores up to
    float32 ties. A layer whose steering changes nothing (the span outside its window) scores exactly 0 in
    exact arithmetic; computed by different kernels such layers score rounding noise (~1e-8) and may come
    in either order, which cannot change a token (steering them does nothing)."""
    import pytest

    assert sorted(a.order) == sorted(b.order)
    assert dict(zip(a.order, a.scores)) == pytest.approx(dict(zip(b.order, b.scores)), abs=1e-5)
    theirs = dict(zip(b.order, b.scores))
    assert all(theirs[x] >= theirs[y] - tie for x, y in zip(a.order, a.order[1:])), (a.order, b.order, b.scores)


def run_engine(model, ps, method="directer", alpha=100.0, beta=0.5, gate=True, slots=None, trials="auto",
               positions=None, new=NEW, speculate="never", eos=frozenset(), limits=None, admit_min=None,
               on_token=None, matmul="auto", probes="prefill", sampling=None, sample_index=None, filt=False,
               cost=None, engines=None, nucleus="auto"):
    """Decode prompts ``ps`` on the continuous engine (``slots`` at once; default: all at once)."""
    from directer.engine.continuous import Engine, EngineOptions
    from directer.methods.sampling import SamplingParams
    from directer.engine.sequence import SequenceSettings

    positions = positions or [SPAN] * len(ps)
    meth = make_method(method, alpha=alpha, beta=beta, gate=gate, plausibility_filter=filt)
    reqs = [DecodeRequest(p, pos, max_new_tokens=(limits[i] if limits else None),
                          sample_index=sample_index[i] if sample_index else 0)
            for i, (p, pos) in enumerate(zip(ps, positions))]
    settings = SequenceSettings(meth, max_new_tokens=new, eos_token_ids=eos, speculate=speculate,
                                sampling=sampling or SamplingParams())
    from directer.runner import slots_per_request

    engine = Engine(model, EngineOptions(slots=slots or len(ps) * slots_per_request(meth), trials=trials, admit_min=admit_min,
                                         matmul=matmul, probes=probes, cost=cost, nucleus=nucleus))
    if engines is not None:  # the caller wants to look at the engine afterwards (its forwards, its cost model)
        engines.append(engine)
    return engine.run(reqs, settings, on_token)


def copy_scaled_logits(model, prompt: list[int], span: list[int], layers, alpha: float) -> torch.Tensor:
    """The reference for steered attention: the prompt minus its last token in a cache, a deep copy of
    it with the steered keys scaled in place (columns a sliding window evicted left alone), then a
    plain forward of the last token. Returns its next-token logits [V]."""
    import copy

    from transformers.cache_utils import DynamicCache

    from directer.engine.sliding_window import column_offset

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(torch.tensor([prompt[:-1]]), cache=cache)
        scaled = copy.deepcopy(cache)
        for layer in layers:
            lay = scaled.layers[layer]
            cols = torch.tensor(span, dtype=torch.long) - column_offset(lay)
            cols = cols[(cols >= 0) & (cols < lay.keys.shape[-2])]
            lay.keys[:, :, cols, :] *= alpha
        return model(torch.tensor([prompt[-1:]]), cache=scaled).logits[0, -1]
