"""DIRECTER's policy (methods/directer.py): schedules, the gate, the plausibility check; its ablations."""

from __future__ import annotations

import pytest
import torch

from directer.methods import Directer, RawStep, halving_sizes, make_method, prompt_key
from directer.results import Ranking

from tiny import ARCHS, SPAN, prompts, random_prompt, run, tiny_model, tokens


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


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


# -- ablations (docs/method.md §8) -----------------------------------------------------------------------------


def test_seeded_ablations_reproduce():
    p = random_prompt(2, 30)
    a = make_method("directer:ranking=random:seed=1").schedule(None, 30, prompt_key(p))
    b = make_method("directer:ranking=random:seed=1").schedule(None, 30, prompt_key(p))
    c = make_method("directer:ranking=random:seed=2").schedule(None, 30, prompt_key(p))
    assert a == b and a != c and a[0].size == 30
    pos = make_method("directer:positions=random:seed=1")
    x, y = pos.steering_positions(p, SPAN, prompt_key(p)), pos.steering_positions(p, SPAN, prompt_key(p))
    z = make_method("directer:positions=random:seed=2").steering_positions(p, SPAN, prompt_key(p))
    assert x == y and x != z and len(x) == len(SPAN) and not set(x) & set(SPAN) and max(x) < len(p) - 1


def test_ablation_runs_reproduce_and_reversed_ranking_reverses(model):
    for spec in ("directer:ranking=random:seed=3", "directer:positions=random:seed=3"):
        assert tokens(run(model, prompts(), spec)) == tokens(run(model, prompts(), spec, batch=False))
    fwd = run(model, prompts()[:1], "directer")[0]
    rev = run(model, prompts()[:1], "directer:ranking=reversed")[0]
    assert rev.ranking.order == fwd.ranking.order  # the same sensitivity ranking, used upside down
