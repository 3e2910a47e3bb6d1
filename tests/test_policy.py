"""The policy pieces: schedules, the gate, the plausibility check, ranking scores, configuration."""

from __future__ import annotations

import json

import pytest
import torch

from directer.config import SteeringConfig
from directer.errors import DirecterError, UsageError
from directer.methods import Directer, RawStep, Static, halving_sizes, make_method, parse_layers
from directer.ranking import Ranking, paper_scores, rank_from_scores, reference_scores


def raw_step(probs: list[float], step: int = 1) -> RawStep:
    p = torch.tensor(probs, dtype=torch.float32)
    logits = p.log()
    return RawStep(step, logits, torch.softmax(logits, -1), torch.softmax(logits, -1).topk(2).values)


def test_halving_schedule_sizes():
    assert halving_sizes(30) == [30, 15, 7, 3, 1]
    assert halving_sizes(32) == [32, 16, 8, 4, 2, 1]
    assert halving_sizes(1) == [1]
    ranking = Ranking(order=list(reversed(range(30))), scores=[0.0] * 30)
    paper = Directer(mode="paper").schedule(ranking, 30)
    ref = Directer(mode="reference").schedule(ranking, 30)
    assert [t.size for t in paper] == [30, 15, 7, 3, 1]
    assert [t.size for t in ref] == [30, 15, 7, 3]  # the released code never runs a single-layer trial
    assert paper[1].layers == frozenset(range(15, 30)) and paper[-1].layers == frozenset({29})  # top of the ranking


def test_reference_schedule_stops_after_ten_trials():
    L = 4096
    sets = Directer(mode="reference").schedule(Ranking(list(range(L)), [0.0] * L), L)
    assert len(sets) == 10 and sets[-1].size == L // 2**9


def test_gate_is_exact_in_paper_mode():
    d = Directer(beta=0.5)
    assert d.skip(raw_step([0.6, 0.29, 0.11]))  # p2 < beta * p1: nothing but the top-1 can pass
    assert not d.skip(raw_step([0.6, 0.31, 0.09]))
    assert not Directer(beta=0.5, gate=False).skip(raw_step([0.9, 0.05, 0.05]))


def test_reference_gate_never_skips_the_first_step():
    d = Directer(beta=0.5, mode="reference")
    assert not d.skip(raw_step([0.9, 0.05, 0.05], step=0))
    assert d.skip(raw_step([0.9, 0.05, 0.05], step=1))


def test_plausibility_check_paper_is_inclusive_reference_is_strict():
    step = raw_step([0.5, 0.25, 0.25])
    paper, ref = Directer(beta=0.5), Directer(beta=0.5, mode="reference")
    # Token 1 has exactly beta times the top probability.
    assert paper.accept(step, 1) and not ref.accept(step, 1)
    assert paper.accept(step, 0) and ref.accept(step, 0)
    step = raw_step([0.5, 0.2, 0.3])
    assert not paper.accept(step, 1) and not ref.accept(step, 1)


def test_static_and_none_policies():
    s = Static(layers=(1, 3))
    assert [t.layers for t in s.schedule(None, 4)] == [frozenset({1, 3})] and s.accept(raw_step([0.9, 0.1]), 1)
    with pytest.raises(UsageError, match="out of range"):
        Static(layers=(7,)).schedule(None, 4)
    n = make_method("none")
    assert not n.steers and n.schedule(None, 4) == []


def test_parse_layers():
    assert parse_layers(None) is None and parse_layers("all") is None
    assert parse_layers("0-3,8, 10-11") == (0, 1, 2, 3, 8, 10, 11)
    with pytest.raises(UsageError):
        parse_layers("a-b")


def test_paper_and_reference_rankings_differ_where_they_should():
    # Three layers, cosine geometry built by hand in 2-D. Raw attention input and output are identical
    # (distance 0) at every measured layer j. Probing layer 0 disturbs layer 2 strongly; probing layer 1
    # disturbs every layer moderately; probing layer 2 disturbs nothing. The paper ranks the probed
    # layer with the largest mean effect first (1); the released variant ranks the measured layer that
    # is disturbed most on average (2).
    e = torch.tensor([1.0, 0.0])
    def rot(deg):
        a = torch.tensor(deg * torch.pi / 180)
        return torch.stack([torch.cos(a), torch.sin(a)])
    pre = e.expand(3, 2).clone()
    post = e.expand(3, 2).clone()
    post_s = torch.stack([
        torch.stack([e, e, rot(90)]),          # probe 0: distance 1 at j=2 only
        torch.stack([rot(60), rot(50), rot(60)]),  # probe 1: distance 0.36-0.5 at every j
        torch.stack([e, e, e]),                # probe 2: nothing
    ])
    pre_s = pre.expand(3, 3, 2).clone()
    paper = paper_scores(pre, post, pre_s, post_s)   # per probed layer: mean over j
    ref = reference_scores(pre, post, pre_s, post_s)  # per measured layer: mean over probes
    assert rank_from_scores(paper, "paper").order == [1, 0, 2]
    assert rank_from_scores(ref, "reference").order == [2, 0, 1]
    # The paper subtracts the raw distance; the released variant does not and clamps at 0.
    shifted_post = torch.stack([rot(10)] * 3)
    assert torch.allclose(paper_scores(pre, shifted_post, pre, shifted_post.expand(3, 3, 2)), torch.zeros(3), atol=1e-6)
    assert (reference_scores(pre, shifted_post, pre, shifted_post.expand(3, 3, 2)) > 0).all()


def test_ranking_json_round_trip_and_errors(tmp_path):
    r = Ranking(order=[2, 0, 1], scores=[0.3, 0.2, 0.1], mode="paper", model="m")
    path = tmp_path / "r.json"
    r.save(path)
    assert Ranking.load(path, num_layers=3) == r
    with pytest.raises(UsageError, match="has 3 layers but the model has 4"):
        Ranking.load(path, num_layers=4)
    path.write_text(json.dumps({"order": [0, 0, 1]}))
    with pytest.raises(DirecterError, match="permutation"):
        Ranking.load(path)
    path.write_text("[")
    with pytest.raises(DirecterError, match="corrupt"):
        Ranking.load(path)
    with pytest.raises(UsageError, match="not found"):
        Ranking.load(tmp_path / "missing.json")


@pytest.mark.parametrize("kw, word", [
    ({"alpha": 0}, "alpha"), ({"alpha": -1.0}, "alpha"), ({"alpha": float("inf")}, "alpha"),
    ({"beta": -0.5}, "beta"), ({"mode": "fast"}, "mode"), ({"method": "pasta2"}, "method"),
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"trial_batching": "some"}, "trial_batching"),
    ({"speculate": "maybe"}, "speculate"), ({"probe_batch_size": 0}, "probe_batch_size"),
])
def test_invalid_configuration(kw, word):
    with pytest.raises(UsageError, match=word):
        SteeringConfig(**kw)


def test_reference_mode_defaults_to_one_at_a_time_evaluation():
    assert SteeringConfig(mode="reference").effective_trial_batching == "sequential"
    assert SteeringConfig(mode="reference").effective_probe_batch_size == 1
    assert SteeringConfig().effective_trial_batching == "all"
