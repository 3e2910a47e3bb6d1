"""The serving scheduler (serving/scheduler.py) on a tiny model: requests join a running engine at the
next forward, a cancelled request frees its slot without changing the others, mixed settings share
forwards, and the counts /health reports."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from directer import Directer
from directer.serving.scheduler import Job, Scheduler

from bundled_tokenizer import load_bundled_tokenizer, tiny_chat_model

HAIKU, NO_COMMAS = "Write a haiku about autumn.", "Do not use any commas."


@pytest.fixture(scope="module")
def d():
    tokenizer = load_bundled_tokenizer(padding_side="left")
    d = Directer(tiny_chat_model(tokenizer), tokenizer, max_new_tokens=24, model_name="tiny-llama")
    d.config = replace(d.config, ignore_eos=True)  # every request decodes to its limit
    return d


def _job(d, n, on_tokens=None, **settings):
    config = replace(d.config, max_new_tokens=n, **settings)
    return Job(d.prepare(HAIKU, [NO_COMMAS] if config.method != "none" else [], config=config), config, n, on_tokens)


def test_a_request_joins_a_running_one_and_both_get_their_own_tokens(d):
    long_alone = d.generate_prepared([_job(d, 24).prepared], config=replace(d.config, max_new_tokens=24))[0]
    short_alone = d.generate_prepared([_job(d, 3, alpha=5.0).prepared], config=replace(d.config, max_new_tokens=3, alpha=5.0))[0]
    s = Scheduler(d, max_batch_size=4)
    s.start()
    started = threading.Event()
    long = _job(d, 24, on_tokens=lambda tokens, *_: started.set() if len(tokens) >= 4 else None)
    s.submit(long)
    assert started.wait(60)
    short = _job(d, 3, alpha=5.0)  # other settings, sent while the long one decodes
    s.submit(short)
    assert short.future.result(60).token_ids == short_alone.token_ids
    assert not long.future.done()  # the short one finished first
    assert long.future.result(60).token_ids == long_alone.token_ids
    s.close(30)


def test_a_cancelled_request_frees_its_slot_and_leaves_the_others_unchanged(d):
    expected = d.generate_prepared([_job(d, 20).prepared], config=replace(d.config, max_new_tokens=20))[0]
    s = Scheduler(d, max_batch_size=2)
    s.start()
    going = threading.Event()
    doomed = _job(d, 24, on_tokens=lambda tokens, *_: going.set() if len(tokens) >= 2 else None)
    other = _job(d, 20)
    s.submit(doomed)
    s.submit(other)
    assert going.wait(60)
    doomed.cancel()
    assert other.future.result(60).token_ids == expected.token_ids
    assert doomed.future.cancelled()
    assert s.running == 0 and s.waiting == 0 and sorted(s._engine.free) == [0, 1]
    s.close(30)


def test_running_and_waiting_counts(d):
    s = Scheduler(d, max_batch_size=1)
    s.start()
    first_going = threading.Event()
    jobs = [_job(d, 12, on_tokens=lambda t, *_: first_going.set())] + [_job(d, 12) for _ in range(2)]
    for j in jobs:
        s.submit(j)
    assert first_going.wait(60)
    assert s.running == 1 and s.waiting == 2
    for j in jobs:
        j.future.result(60)
    assert s.running == 0 and s.waiting == 0 and s.completed == 3
    s.close(30)


def test_sampled_jobs_with_stops_and_samples(d):
    """Per job: its sample index (stream), its stop condition and its deadline, in the engine and in the
    continuous engine, for a key-scaling and an attention-bias method."""
    sampled = replace(d.config, temperature=0.9, seed=4)
    s = Scheduler(d, max_batch_size=4)
    s.start()
    for method in ("directer", "pasta"):
        config = replace(sampled, method=method, max_new_tokens=16)
        prepared = d.prepare(HAIKU, [NO_COMMAS], config=config)
        jobs = [Job(prepared, config, 16, sample_index=k) for k in (0, 1, 0)]
        for j in jobs:
            s.submit(j)
        tokens = [j.future.result(60).token_ids for j in jobs]
        assert tokens[0] == tokens[2] != tokens[1]
        stop_at = tokens[0][5]
        stopped = Job(prepared, config, 16, stop=lambda ids, t=stop_at: ids[-1] == t)
        s.submit(stopped)
        result = stopped.future.result(60)
        assert result.finish_reason == "stop" and result.token_ids == tokens[0][:tokens[0].index(stop_at) + 1]
        late = Job(prepared, replace(config, max_new_tokens=16), 16, timeout=0.0)
        s.submit(late)
        with pytest.raises(TimeoutError):
            late.future.result(60)
    s.close(30)
