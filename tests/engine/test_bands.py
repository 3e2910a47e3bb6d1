"""The attention bands (engine/bands.py): which columns each raw-row call reads, how extra-row groups
split, and that reading in bands decodes exactly what one call does, on the five architectures (sliding
windows included)."""

from __future__ import annotations

import pytest
import torch

from directer.engine.continuous import Engine, EngineOptions
from directer.engine.bands import GATHER_COST, MIN_COLUMNS, Band, group_bands, raw_bands
from directer.engine.extra_rows import ExtraGroup, ExtraRow, padded_bands
from directer.engine.requests import DecodeRequest
from directer.engine.sequence import SequenceSettings
from directer.methods import make_method

from tiny import ARCHS, SPAN, random_prompt, tiny_model, tokens


def test_rows_of_similar_lengths_take_one_call_over_every_slot():
    assert raw_bands(8, [0, 3, 5], [900, 1000, 950]) == [Band(0, 1001, 0, 8)]
    assert raw_bands(8, [0, 3], [10, MIN_COLUMNS - 1]) == [Band(0, MIN_COLUMNS, 0, 8)]  # too few columns to split
    assert raw_bands(8, [0, 3], [10, 5000], split=False) == [Band(0, 5001, 0, 8)]


def test_one_long_request_reads_its_own_columns_alone():
    bands = raw_bands(16, list(range(16)), [100] * 7 + [8000] + [100] * 8)
    assert bands == [Band(0, 101, 0, 16), Band(0, 8001, 7, 8)]  # the long slot as a one-slot view
    assert sum(b.reads() for b in bands) * 10 < 16 * 8001


def test_long_rows_far_apart_are_gathered_when_that_reads_less():
    bands = raw_bands(32, list(range(32)), [4000 if s in (0, 31) else 50 for s in range(32)])
    assert bands[1] == Band(0, 4001, gather=(0, 31))
    assert bands[1].reads() == GATHER_COST * 2 * 4001
    near = raw_bands(32, list(range(32)), [4000 if s in (4, 5) else 50 for s in range(32)])
    assert near[1] == Band(0, 4001, 4, 6)  # neighbours: a view of two slots


def test_sliding_windows_read_their_windows():
    # window 512: a row at position p sees columns p - 511 .. p
    assert raw_bands(4, [0, 1], [3000, 3100], window=512) == [Band(2489, 3101, 0, 4)]
    bands = raw_bands(4, [0, 1, 2], [100, 120, 6000], window=512)
    assert bands == [Band(0, 121, 0, 4), Band(5489, 6001, 2, 3)]


def test_extra_groups_split_by_their_limits_when_that_copies_less():
    assert group_bands([300, 310, 320]) == [[0, 1, 2]]  # similar limits: one band
    assert group_bands([50, 5000, 60, 40]) == [[0, 2, 3], [1]]  # each band in forward order
    assert group_bands([50, 5000, 60, 40], split=False) == [[0, 1, 2, 3]]
    assert group_bands([10, MIN_COLUMNS]) == [[0, 1]]
    assert group_bands([4000, 4100, 50, 60]) == [[0, 1, 2, 3]]  # half the groups long: too little to save


def test_padded_bands_restore_the_forward_order_and_keep_their_own_scratch_columns():
    def group(slot, first, n, limit):
        return ExtraGroup(slot, list(range(first, first + n)), limit, limit, [ExtraRow(frozenset({0}), 100.0, [1])] * n)

    groups = [group(0, 2, 2, 50), group(1, 4, 3, 5000), group(2, 7, 1, 60)]
    bands, order = padded_bands(groups, [[0, 2], [1]], 2, torch.device("cpu"))
    assert [pg.slots.tolist() for pg in bands] == [[0, 2], [1]]
    assert [pg.offset for pg in bands] == [0, 2 * 2]  # the second band's own keys after the first's G * R
    # rows one band after the other: 2, 3, 7 | 4, 5, 6 -> the forward's 2..7
    assert order == [0, 1, 3, 4, 5, 2]
    assert padded_bands(groups, [[0], [1, 2]], 2, torch.device("cpu"))[1] is None  # already in order


@pytest.fixture(params=ARCHS)
def arch(request):
    return request.param


def test_bands_decode_what_one_call_does(arch, monkeypatch):
    monkeypatch.setattr("directer.engine.bands.MIN_COLUMNS", 8)  # tiny prompts split too
    import directer.engine.packed_attention as packed

    def counted(name: str) -> list[int]:  # how many bands each plan of the forwards made
        plan, seen = getattr(packed, name), []

        def spy(*args, **kwargs):
            bands = plan(*args, **kwargs)
            seen.append(len(bands))
            return bands

        monkeypatch.setattr(packed, name, spy)
        return seen

    seen, split_groups = counted("raw_bands"), counted("group_bands")
    model = tiny_model(arch)
    ps = [random_prompt(40, 90), random_prompt(41, 9), random_prompt(42, 11), random_prompt(43, 10)]
    settings = SequenceSettings(make_method("directer", beta=0.05), max_new_tokens=10)

    def run(bands: bool):
        engine = Engine(model, EngineOptions(slots=4, bands=bands))
        return engine.run([DecodeRequest(p, SPAN) for p in ps], settings)

    split, whole = run(True), run(False)
    assert max(seen) == 2  # the long prompt's rows were read in a band of their own
    assert max(split_groups) == 2  # and its trials' groups too
    assert tokens(split) == tokens(whole)
    assert [o.trace for o in split] == [o.trace for o in whole]
    for a, b in zip(split, whole):
        assert a.raw_logprobs == pytest.approx(b.raw_logprobs, abs=1e-5)


@pytest.mark.parametrize("method", ["pasta", "instaboost:filter"])
def test_biased_slots_read_in_bands_too(method, monkeypatch):
    # the attention-bias baselines' constant biases ride on an additive mask, cut per band like a plain one
    monkeypatch.setattr("directer.engine.bands.MIN_COLUMNS", 8)
    import directer.engine.packed_attention as packed

    made, cut = [], packed.band_masks

    def spy(bands, full, device):
        made.append((len(bands), full.dtype))
        return cut(bands, full, device)

    monkeypatch.setattr(packed, "band_masks", spy)
    model = tiny_model("llama")
    ps = [random_prompt(50, 90), random_prompt(51, 9), random_prompt(52, 11)]
    name = method.split(":")[0]
    settings = SequenceSettings(make_method(name, plausibility_filter=method.endswith(":filter")), max_new_tokens=8)

    def run(bands: bool):
        engine = Engine(model, EngineOptions(slots=6, bands=bands))
        return engine.run([DecodeRequest(p, SPAN) for p in ps], settings)

    split, whole = run(True), run(False)
    assert (2, torch.float32) in made  # a biased layer's additive mask was cut into two bands
    assert tokens(split) == tokens(whole)
    assert [o.trace for o in split] == [o.trace for o in whole]
