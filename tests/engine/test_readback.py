"""One device read per forward (engine/readback.py): the read-back numbers equal the per-row values they
replace, and the engine's forwards read the device once each, counted on the five architectures."""

from __future__ import annotations

import pytest
import torch

from directer.engine.continuous import Engine, EngineOptions
from directer.engine.readback import TrialSource, read_back
from directer.engine.requests import DecodeRequest
from directer.engine.sequence import SequenceSettings
from directer.evaluation.host_cost import count_host_cost
from directer.methods import make_method

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


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["directer", "pasta:filter=1"])
def test_a_decode_forward_reads_the_device_once(arch, method):
    model = tiny_model(arch)
    meth = make_method(method, alpha=100.0, beta=0.1)  # a low beta: gates open, trials are accepted
    engine = Engine(model, EngineOptions(slots=6))
    settings = SequenceSettings(meth, max_new_tokens=12)
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
