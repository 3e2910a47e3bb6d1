"""What a decode forward carries (engine/decode_rows.py), on the sequences of a tiny model's engine in
the middle of decoding: slot rows first, then one group of extra rows per source sequence (a speculating sequence's
whole schedule beside its raw row, an opened step's missing trials, each seeing its slot's columns
before the step's position), and the
rows whose logits are read in that order."""

from __future__ import annotations

import pytest
import torch

from directer.engine.continuous import Engine, EngineOptions
from directer.engine.decode_rows import decode_rows
from directer.engine.requests import DecodeRequest
from directer.engine.sequence import SequenceSettings
from directer.methods import make_method

from tiny import SPAN, prompts, tiny_model


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


def mid_decode(model, n: int = 6) -> Engine:
    """An engine stepped until some sequences wait to advance (raw) and others wait for trials."""
    engine = Engine(model, EngineOptions(slots=n))
    # beta 0.1: the gate opens at almost every step; 0.99: almost never (the two kinds fall out of step)
    kinds = [SequenceSettings(make_method("directer", beta=beta), max_new_tokens=12, speculate="never")
             for beta in (0.1, 0.99)]
    for i, p in enumerate(prompts(n)):
        engine.submit(DecodeRequest(p, SPAN), kinds[i % 2])
    with torch.inference_mode():
        for _ in range(12):
            engine.step()
            states = {s.state if s.state != "trials" or s.to_do() else "waiting" for s in engine.running}
            if {"raw", "trials"} <= states:
                return engine
    raise AssertionError("no forward had both kinds of sequence")


@pytest.mark.parametrize("speculate", [False, True])
def test_slot_rows_come_first_then_one_group_per_source(llama, speculate):
    engine = mid_decode(llama)
    running = engine.running
    raw = [s for s in running if s.state == "raw"]
    opened = [s for s in running if s.state == "trials" and s.to_do()]
    assert raw and opened  # both kinds are there to check
    missing = {id(s): s.to_do() for s in opened}
    rows = decode_rows(raw, running, 4, "auto", lambda s, r, n: speculate)

    n = len(raw)
    assert rows.slot_list == [s.slot for s in raw]
    assert rows.ids[:n] == [s.step_input for s in raw] and rows.pos[:n] == [s.step_pos for s in raw]
    assert rows.logit_rows[:n] == [(s, None, i) for i, s in enumerate(raw)]
    sources = ([s for s in raw if s.schedule] if speculate else []) + opened
    assert [g.slot for g in rows.groups] == [s.slot for s in sources]
    at = n
    for g, s in zip(rows.groups, sources):
        ks = list(range(len(s.schedule))) if s in raw else missing[id(s)]
        assert g.rows == list(range(at, at + len(ks)))
        assert g.limit == g.position == s.step_pos  # a column is a position: the step's raw token is not theirs
        assert rows.ids[at:at + len(ks)] == [s.step_input] * len(ks)
        assert [(t, k, r) for t, k, r in rows.logit_rows if t is s and k is not None] == \
            [(s, k, at + j) for j, k in enumerate(ks)]
        at += len(ks)
    assert len(rows.ids) == len(rows.pos) == at and not rows.probe_rows
    assert all(s.issued == set(missing[id(s)]) for s in opened)  # issued: not asked for again


def test_trials_first_issues_the_strongest_missing_trial_alone(llama):
    engine = mid_decode(llama)
    opened = [s for s in engine.running if s.state == "trials" and s.to_do()]
    first = {id(s): s.to_do()[0] for s in opened}
    rows = decode_rows([], engine.running, 4, "first", lambda s, r, n: True)
    assert [len(g.rows) for g in rows.groups] == [1] * len(opened)
    assert [k for _, k, _ in rows.logit_rows] == [first[id(s)] for s in opened]
    assert rows.slot_list == [] and len(rows.ids) == len(opened)
