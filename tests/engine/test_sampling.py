"""Sampling (engine/sampling.py, the engine's and the loop's use of it) on tiny random models: temperature
0 is greedy, one seed gives the same tokens whatever the batch or the admission order, every steered
token lies in the raw beta-head, and the draws follow the stated distributions (many seeded draws
against the exact distribution: transformers' sampling for ``none``, README Fidelity's design for
DIRECTER)."""

from __future__ import annotations

import pytest
import torch

from directer.engine.continuous import Engine, EngineOptions
from directer.engine.requests import DecodeRequest
from directer.engine.sampling import Draw, Sampler, draw_rows, inverse_cdf
from directer.engine.sequence import SequenceSettings
from directer.methods import make_method
from directer.methods.base import plausible, RawStep
from directer.methods.sampling import SamplingParams, stream_key

from tiny import ARCHS, SPAN, copy_scaled_logits, prompts, random_prompt, run, run_engine, tiny_model, tokens

HOT = SamplingParams(temperature=1.0, top_k=20, seed=7)


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


def test_inverse_cdf_never_draws_a_token_of_probability_zero():
    probs = torch.tensor([0.0, 0.25, 0.0, 0.75, 0.0])
    assert [inverse_cdf(probs, u) for u in (0.0, 0.1, 0.2499, 0.25, 0.9, 0.999999)] == [1, 1, 1, 3, 3, 3]
    assert inverse_cdf(probs, 1.0) == 3  # u * total at the total: the last token that can be drawn


@pytest.mark.parametrize("sort", [False, True])
def test_a_forwards_draws_made_together_equal_each_row_drawn_alone(sort):
    """draw_rows (each setting's rows warped as one batch, one inverse CDF, nothing read) gives every row the
    token and the warped distribution it gets alone, bit for bit, at the bundled model's vocabulary size:
    greedy rows between sampled ones, two settings interleaved, top-p by a batched sort or by candidates."""
    scale = torch.tensor([1.0, 6.0, 8.0, 3.0, 12.0, 6.0])[:, None]
    z = torch.randn(6, 49152, generator=torch.Generator().manual_seed(0)) * scale
    a = Sampler(SamplingParams(temperature=0.7, top_p=0.9, seed=1), "a")
    b = Sampler(SamplingParams(temperature=1.2, top_k=50, top_p=0.8, min_p=0.02, seed=1), "b")
    draws = [Draw(a, 0.3), None, Draw(b, 0.99), Draw(a, 0.0), None, Draw(b, 0.5)]
    argmax = z.argmax(-1)
    drawn, warped, index = draw_rows(z, draws, sort, argmax)
    assert index.tolist() == [0, 3, 2, 5]  # grouped by setting
    for j, i in enumerate(index.tolist()):
        alone = draws[i].sampler.distribution(z[i])
        assert torch.equal(warped[j], alone)
        assert int(drawn[i]) == inverse_cdf(alone, draws[i].uniform)
    assert [int(drawn[i]) for i in (1, 4)] == [int(argmax[1]), int(argmax[4])]  # greedy rows: their argmax
    drawn, _, index = draw_rows(z[:2], [Draw(a, 0.1), Draw(a, 0.7)], sort, argmax[:2])
    assert index is None  # every row, one setting: no gathers
    assert drawn.tolist() == [inverse_cdf(a.distribution(z[0]), 0.1), inverse_cdf(a.distribution(z[1]), 0.7)]
    assert draw_rows(z, [None] * 6, sort, argmax) is None


@pytest.mark.parametrize("method", ["none", "directer", "pasta:filter=1"])
def test_top_p_by_sort_and_by_candidates_decode_the_same(llama, method):
    """EngineOptions.nucleus only changes how top-p is computed: the same tokens and traces."""
    sampling = SamplingParams(temperature=1.0, top_p=0.8, min_p=0.01, seed=5)
    sort, candidates = (run_engine(llama, prompts(4), method=method, sampling=sampling, speculate="auto", nucleus=n)
                        for n in ("sort", "candidates"))
    assert tokens(sort) == tokens(candidates)
    assert [o.trace for o in sort] == [o.trace for o in candidates]
    assert [o.raw_logprobs for o in sort] == [o.raw_logprobs for o in candidates]


def test_the_warped_distribution_is_generates(llama):
    """Sampler.distribution is what model.generate(do_sample=True) samples from (its processed scores)."""
    prompt = torch.tensor([random_prompt(3)])
    params = SamplingParams(temperature=0.7, top_k=30, top_p=0.8, min_p=0.05, seed=1)
    out = llama.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=0.7, top_k=30,
                         top_p=0.8, min_p=0.05, max_new_tokens=1, output_scores=True, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=0)
    expected = torch.softmax(out.scores[0][0], dim=-1)
    assert torch.allclose(Sampler(params, "s").distribution(out.logits[0][0]), expected, atol=1e-6)


def test_top_p_on_candidates_is_transformers_top_p_bit_for_bit():
    """The short equivalent input (engine/sampling.py, _nucleus) gives TopPLogitsWarper's result exactly, on a
    vocabulary the size of the bundled model's, for peaked and flat scores; the short path is taken
    for peaked ones and the full sort for flat ones."""
    from transformers.generation.logits_process import TopPLogitsWarper

    from directer.engine import sampling

    none = torch.empty((1, 0), dtype=torch.long)
    lengths: list[int] = []

    class Spy(TopPLogitsWarper):
        def __call__(self, input_ids, scores):
            lengths.append(scores.shape[-1])
            return super().__call__(input_ids, scores)

    for seed, scale in enumerate([1.0, 4.0, 6.0, 8.0, 12.0] * 4):
        z = torch.randn(1, 49152, generator=torch.Generator().manual_seed(seed)) * scale
        for top_p in (0.5, 0.9, 0.99):
            lengths.clear()
            ours = sampling._nucleus(Spy(top_p), none, z.clone(), 0)
            assert torch.equal(ours, TopPLogitsWarper(top_p)(none, z.clone()))
            if scale >= 4.0 and top_p <= 0.9:
                assert lengths[-1] < 49152 // 4  # the short input was enough
            if scale == 1.0:
                assert lengths[-1] == 49152  # a nucleus of thousands of tokens: the full sort


@pytest.mark.parametrize("method", ["none", "directer", "static"])
def test_temperature_zero_is_greedy_whatever_the_other_settings(model, method):
    greedy = run_engine(model, prompts(), method=method)
    cold = run_engine(model, prompts(), method=method, sampling=SamplingParams(0.0, top_p=0.5, top_k=3, seed=9))
    assert tokens(cold) == tokens(greedy)
    assert [o.trace for o in cold] == [o.trace for o in greedy]


@pytest.mark.parametrize("method", ["none", "directer", "static", "pasta", "spotlight", "instaboost", "static:filter=1"])
def test_temperature_zero_is_greedy_for_every_method(llama, method):
    cold = run(llama, prompts(), method=method, sampling=SamplingParams(0.0, top_p=0.5, seed=9))
    assert tokens(cold) == tokens(run(llama, prompts(), method=method))


@pytest.mark.parametrize("method", ["none", "directer", "static", "static:filter=1"])
def test_one_seed_gives_the_same_tokens_whatever_the_batch_and_admission(model, method):
    ps = prompts(4)
    together = tokens(run_engine(model, ps, method=method, sampling=HOT))
    assert together != tokens(run_engine(model, ps, method=method))  # it does sample
    assert tokens(run_engine(model, ps[::-1], method=method, sampling=HOT, slots=2))[::-1] == together
    assert [tokens(run_engine(model, [p], method=method, sampling=HOT))[0] for p in ps] == together
    assert tokens(run_engine(model, ps, method=method, sampling=HOT, slots=3, admit_min=1)) == together
    assert tokens(run(model, ps, method=method, sampling=HOT)) == together  # the synchronised loop draws alike
    other = tokens(run_engine(model, ps, method=method, sampling=SamplingParams(1.0, top_k=20, seed=8)))
    assert other != together


def test_sampled_and_greedy_requests_share_forwards(llama):
    """Mixed settings in one engine: each request gets what it gets alone."""
    ps = prompts(4)
    engine = Engine(llama, EngineOptions(slots=4, admit_min=1))
    meth = make_method("directer")
    plain = SequenceSettings(meth, max_new_tokens=10)
    hot = SequenceSettings(meth, max_new_tokens=10, sampling=HOT)
    reqs = [DecodeRequest(p, SPAN) for p in ps]
    outs = engine.run(reqs, [hot, plain, hot, plain])
    assert outs[1].token_ids == tokens(run_engine(llama, [ps[1]]))[0]
    assert outs[2].token_ids == tokens(run_engine(llama, [ps[2]], sampling=HOT))[0]


def test_sample_index_gives_independent_streams(llama):
    p = prompts(1)[0]
    outs = run_engine(llama, [p] * 4, sampling=HOT, sample_index=[0, 1, 2, 0])
    assert outs[0].token_ids == outs[3].token_ids
    assert len({tuple(o.token_ids) for o in outs[:3]}) == 3


@pytest.mark.parametrize("method", ["directer", "static:filter=1"])
def test_every_steered_token_is_in_the_raw_beta_head(model, method):
    """Re-run the raw model on each response: every accepted trial's token passes Eq. 2 (float32) and
    lies in the support of the warped raw distribution (top-k here)."""
    sampling = SamplingParams(temperature=1.5, top_k=10, seed=3)
    ps = prompts(4)
    outs = run_engine(model, ps, method=method, sampling=sampling, new=16)
    sampler = Sampler(sampling, "check")
    steered = 0
    for p, o in zip(ps, outs):
        with torch.no_grad():
            logits = model(torch.tensor([p + o.token_ids])).logits[0, len(p) - 1:-1]
        for t, (tok, trace) in enumerate(zip(o.token_ids, o.trace)):
            if trace.layers is None:
                continue
            probs = torch.softmax(logits[t].float(), dim=-1)
            raw = RawStep(t, logits[t], probs, probs.topk(2).values, None, sampler.distribution(logits[t]))
            assert plausible(raw, tok, 0.5), (t, tok)
            steered += 1
    assert steered >= 5  # the property was exercised


def _first_tokens(model, prompt, method, sampling, n, slots=64):
    engine = Engine(model, EngineOptions(slots=slots))
    settings = SequenceSettings(make_method(method), max_new_tokens=1, sampling=sampling)
    outs = engine.run([DecodeRequest(prompt, SPAN, sample_index=i) for i in range(n)], settings)
    counts = torch.zeros(model.config.vocab_size, dtype=torch.float64)
    for o in outs:
        counts[o.token_ids[0]] += 1
    return counts / n, outs


def _tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p.double() - q.double()).abs().sum())


@pytest.mark.slow
def test_none_samples_the_distribution_of_transformers_sampling(llama):
    """4,000 seeded first tokens of ``none`` against the exact distribution generate samples from, and
    against 4,000 draws of model.generate(do_sample=True) itself (total variation; the expected TV of
    4,000 draws over this support is about 0.02)."""
    prompt, n = random_prompt(5), 4000
    sampling = SamplingParams(temperature=1.5, top_k=12, seed=11)
    ours, _ = _first_tokens(llama, prompt, "none", sampling, n)
    ids = torch.tensor([prompt])
    out = llama.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.5, top_k=12,
                         max_new_tokens=1, output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    exact = torch.softmax(out.scores[0][0].double(), dim=-1)
    assert (exact > 0.01).sum() >= 6  # a spread-out distribution, not a near-certain token
    torch.manual_seed(0)
    theirs = torch.zeros_like(exact)
    batch = ids.repeat(500, 1)
    for _ in range(n // 500):
        gen = llama.generate(batch, attention_mask=torch.ones_like(batch), do_sample=True, temperature=1.5, top_k=12,
                             max_new_tokens=1, pad_token_id=0)
        theirs += torch.bincount(gen[:, -1], minlength=exact.shape[0]).double()
    theirs /= n
    assert _tv(ours, exact) < 0.04
    assert _tv(theirs, exact) < 0.04
    assert _tv(ours, theirs) < 0.05


def _design_distribution(model, prompt, ranking, sampling, beta=0.5, alpha=100.0):
    """README, Fidelity (sampling) for step 0: a raw draw outside the head H (Eq. 2 on the raw model's
    own distribution, within the warped raw support) is emitted; one inside runs the trials in schedule
    order, each drawing from its warped steered distribution and accepted when the draw is in H, else
    the raw draw stands. P(z) = p~(z) for z outside H; p~(H) * A(z) + F * p~(z) inside, where A(z)
    sums over trials k the chance that trials 0..k-1 drew outside H and trial k drew z, and F is the
    chance that every trial drew outside H."""
    sampler = Sampler(sampling, "design")
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1]
    probs = torch.softmax(logits.float(), dim=-1).double()
    warped = sampler.distribution(logits).double()
    head = (probs >= beta * probs.max()) & (warped > 0)
    method = make_method("directer", beta=beta)
    schedule = method.schedule(ranking, model.config.num_hidden_layers)
    if int(head.sum()) < 2:
        return warped, head, 0.0
    reach, accepted = 1.0, torch.zeros_like(warped)
    for trial in schedule:
        q = sampler.distribution(copy_scaled_logits(model, prompt, SPAN, sorted(trial.layers), alpha)).double()
        accepted += reach * q * head
        reach *= 1.0 - float(q[head].sum())
    inside = float(warped[head].sum())
    design = torch.where(head, inside * accepted + reach * warped, warped)
    return design, head, 1.0 - reach


@pytest.mark.slow
def test_directer_samples_the_distribution_its_design_states(llama):
    """4,000 seeded first tokens of DIRECTER against the exact distribution README Fidelity states (the
    steered trials' distributions computed independently, by copying the cache and scaling its keys);
    the prompt is one whose head holds several tokens and where steering moves the distribution."""
    sampling = SamplingParams(temperature=1.0, top_k=12, seed=5)
    for seed in range(40):
        prompt = random_prompt(seed, 20)
        _, outs = _first_tokens(llama, prompt, "directer", sampling, 1, slots=1)
        design, head, moved = _design_distribution(llama, prompt, outs[0].ranking, sampling)
        warped = Sampler(sampling, "x").distribution(llama(torch.tensor([prompt])).logits[0, -1].detach()).double()
        if int(head.sum()) >= 2 and _tv(design, warped) > 0.15:
            break
    else:
        pytest.fail("no prompt among 40 where the design's distribution differs from raw sampling")
    ours, outs = _first_tokens(llama, prompt, "directer", sampling, 4000)
    assert _tv(ours, design) < 0.04, (_tv(ours, design), _tv(ours, warped))
    assert _tv(ours, warped) > 0.1  # the test tells the design from plain sampling
    assert all(o.ranking.order == outs[0].ranking.order for o in outs)


def test_a_gate_skip_under_sampling_emits_the_raw_draw(llama):
    """Where the head holds only the raw top token the gate skips, and the output equals sampling with
    steering off (the gate stays exact under sampling): DIRECTER with gate=False gives the same tokens."""
    ps = prompts(3)
    on = run_engine(llama, ps, sampling=HOT, new=16)
    off = run_engine(llama, ps, sampling=HOT, new=16, gate=False)
    assert tokens(on) == tokens(off)
    assert sum(o.stats.gate_skips for o in on) > 0


def test_stream_key_names_seed_prompt_and_sample():
    assert len({stream_key(1, 2, 0), stream_key(1, 2, 1), stream_key(2, 2, 0), stream_key(1, 3, 0)}) == 4
