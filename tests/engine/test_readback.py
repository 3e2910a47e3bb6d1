"""One device read per forward (engine/readback.py): the read-back numbers equal the per-row values they
replace, and the engine's forwards read the device once each, counted on the five architectures."""

from __future__ import annotations

import pytest
import torch

from directer.engine.continuous import Engine, EngineOptions
from directer.engine.readback import TrialSource, read_back
from directer.engine.requests import DecodeRequest
from directer.engine.sampling import Draw, Sampler, inverse_cdf
from directer.engine.sequence import SequenceSettings
from directer.evaluation.host_cost import count_host_cost
from directer.methods import make_method
from directer.methods.sampling import SamplingParams

from tiny import ARCHS, SPAN, prompts, tiny_model


def test_read_back_equals_the_per_row_values():
    torch.manual_seed(0)
    raw = torch.randn(3, 50)
    earlier = torch.randn(50)  # a step opened by an earlier forward
    trial = torch.randn(2, 50)
    z = earlier.float()
    sources = [TrialSource(row=1), TrialSource(probs=z.softmax(-1), logits=earlier, lse=z.logsumexp(-1))]
    read = read_back(raw, trial, sources)
    for i in range(3):
        p = raw[i].float().softmax(-1)
        assert read.raw[i].token == int(raw[i].argmax())
        assert read.raw[i].top2 == tuple(float(v) for v in p.topk(2).values)
        assert read.raw[i].logprob == float(raw[i][int(raw[i].argmax())] - raw[i].logsumexp(-1))
    for t, src, row in zip(read.trials, (raw[1], earlier), trial):
        token = int(row.argmax())
        assert t.token == token
        assert t.prob == float(src.softmax(-1)[token])
        assert t.logprob == float(src[token] - src.logsumexp(-1))
    assert all(r.top is None for r in read.raw)
    top = read_back(raw, None, [], top=4).raw  # the most likely tokens, for top_logprobs
    for i in range(3):
        lp, ids = (raw[i] - raw[i].logsumexp(-1)).topk(4)
        assert top[i].top == list(zip(ids.tolist(), lp.tolist()))


def test_read_back_draws_equal_the_per_row_draws():
    """Under sampling: a raw row's draw 0 with its raw probability, log-probability and support flag; a
    trial row's draw with the raw step's (this forward's row, or an earlier step's kept tensors)."""
    torch.manual_seed(1)
    raw, earlier, trial = torch.randn(3, 60) * 3, torch.randn(60) * 3, torch.randn(3, 60) * 3
    trial[1] = earlier  # drawn with the earlier step's own setting: inside its support
    s = Sampler(SamplingParams(temperature=0.9, top_k=8, seed=2), "s")
    t = Sampler(SamplingParams(temperature=1.3, top_p=0.7, seed=2), "t")
    z = earlier.float()
    kept = TrialSource(probs=z.softmax(-1), logits=earlier, lse=z.logsumexp(-1), support=t.distribution(earlier))
    sources = [TrialSource(row=0), kept, TrialSource(row=1)]
    raw_draws, trial_draws = [Draw(s, 0.4), None, Draw(t, 0.8)], [Draw(s, 0.6), Draw(t, 0.2), None]
    read = read_back(raw, trial, sources, raw_draws=raw_draws, trial_draws=trial_draws)
    for i, d in enumerate(raw_draws):
        r = read.raw[i]
        if d is None:
            assert r.choice is None
            continue
        w = d.sampler.distribution(raw[i])
        assert torch.equal(read.support[i], w)
        c = inverse_cdf(w, d.uniform)
        assert (r.choice, r.choice_supported) == (c, True)
        assert r.choice_prob == float(raw[i].softmax(-1)[c])
        assert r.choice_logprob == float(raw[i][c] - raw[i].logsumexp(-1))
    supports = [read.support[0], kept.support, None]
    for j, (d, src, support) in enumerate(zip(trial_draws, (raw[0], earlier, raw[1]), supports)):
        r = read.trials[j]
        token = int(trial[j].argmax()) if d is None else inverse_cdf(d.sampler.distribution(trial[j]), d.uniform)
        assert r.token == token
        assert r.prob == float(src.softmax(-1)[token])
        assert r.supported == (None if d is None else bool(support[token] > 0))
    assert [r.supported for r in read.trials] == [False, True, None]  # trial 0's draw lies outside row 0's top-8


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["directer", "pasta:filter=1"])
@pytest.mark.parametrize("sampled", [False, True])
def test_a_decode_forward_reads_the_device_once(arch, method, sampled):
    """Greedy, and under sampling (top-k, top-p by the batched sort, min-p) with top log-probabilities:
    draws, support flags, the plausibility test's operands and the top tokens all come with the one read."""
    model = tiny_model(arch)
    meth = make_method(method, alpha=100.0, beta=0.1)  # a low beta: gates open, trials are accepted
    engine = Engine(model, EngineOptions(slots=6, nucleus="sort"))
    sampling = SamplingParams(temperature=1.0, top_k=40, top_p=0.9, min_p=0.01, seed=3) if sampled else SamplingParams()
    settings = SequenceSettings(meth, max_new_tokens=12, sampling=sampling, top_logprobs=3 if sampled else 0)
    for p in prompts(3):
        engine.submit(DecodeRequest(p, SPAN), settings)
    with torch.inference_mode():
        engine.step()  # the prefill (one read, and one per prompt for the ranking)
        counts = []
        while engine.busy:
            with count_host_cost() as cost:
                engine.step()
            counts.append(cost.syncs)
    assert counts and max(counts) == 1, counts
