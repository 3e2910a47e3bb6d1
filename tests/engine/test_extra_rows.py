"""Extra rows' attention (engine/extra_rows.py): the one-call SDPA form against the written-out products,
steering that touches no visible column, float32 throughout, own keys read from the scratch row, and the
fallback for mixed groups."""

from __future__ import annotations

import torch

from directer.engine.extra_rows import (ExtraGroup, ExtraRow, PaddedGroups, attend_explicit, attend_fused, gather_slots,
                                        own_keys)
from directer.engine.slot_cache import SlotCache

LAYERS, HQ, HKV, D, SLOTS, CAP = 3, 4, 2, 8, 4, 20
SPAN = [2, 3, 4]


def groups() -> list[ExtraGroup]:
    # three groups of 1, 3 and 2 rows over slots 2, 0, 3, different limits; one row steers no layer
    def rows(*sets: tuple[int, ...]) -> list[ExtraRow]:
        return [ExtraRow(frozenset(s), 100.0, SPAN) for s in sets]

    return [ExtraGroup(2, [0], 12, 11, rows((0, 1, 2))),
            ExtraGroup(0, [1, 2, 3], 16, 15, rows((0,), (1, 2), ())),
            ExtraGroup(3, [4, 5], 9, 8, rows((2,), (0, 2)))]


def inputs(dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(SLOTS, HKV, CAP, D, generator=g).to(dtype)
    V = torch.randn(SLOTS, HKV, CAP, D, generator=g).to(dtype)
    m = 6  # extra rows
    q, k, v = (torch.randn(m, h, 1, D, generator=g).to(dtype) for h in (HQ, HKV, HKV))
    return K, V, q, k, v


def fused(pg, layer, q, k, v, K, V, visible):
    """attend_fused on the slots' gathered columns followed by the rows' own keys."""
    keys, values = own_keys(pg, gather_slots(pg, K), k), own_keys(pg, gather_slots(pg, V), v)
    return attend_fused(pg, layer, q, keys, values, visible, D ** -0.5)


def run(form: str, groups_: list[ExtraGroup], dtype=torch.float32, visible=None, seed=0) -> list[torch.Tensor]:
    K, V, q, k, v = inputs(dtype, seed)
    pg = PaddedGroups.build(groups_, LAYERS, torch.device("cpu"))
    ks, vs = K[:, :, :pg.width].index_select(0, pg.slots), V[:, :, :pg.width].index_select(0, pg.slots)
    if visible is None:
        visible = torch.arange(pg.width)[None, :] < pg.limits[:, None]
    out = []
    for layer in range(LAYERS):
        if form == "fused":
            out.append(fused(pg, layer, q, k, v, K, V, visible))
        else:
            out.append(attend_explicit(pg, layer, q, k, v, ks, vs, visible, D ** -0.5, None))
    return out


def test_one_sdpa_call_equals_the_written_out_products():
    for fused, explicit in zip(run("fused", groups()), run("explicit", groups())):
        assert fused.shape == (6, 1, HQ, D)
        torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_a_row_is_computed_alone_as_in_its_group():
    # the layout pads the groups; each row's result is its own (within float rounding of the padding)
    together = run("fused", groups())
    for i, alone in enumerate(groups()):
        g = ExtraGroup(alone.slot, list(range(len(alone.steering))), alone.limit, alone.position, alone.steering)
        first = sum(len(x.steering) for x in groups()[:i])
        K, V, q, k, v = inputs()
        pg = PaddedGroups.build([g], LAYERS, torch.device("cpu"))
        visible = torch.arange(pg.width)[None, :] < pg.limits[:, None]
        sl = slice(first, first + len(alone.steering))
        for layer in range(LAYERS):
            o = fused(pg, layer, q[sl], k[sl], v[sl], K, V, visible)
            torch.testing.assert_close(o, together[layer][sl], atol=1e-5, rtol=1e-5)


def test_steering_no_visible_column_is_exactly_unsteered():
    # the span hidden (a sliding window that excludes it): steered rows equal the unsteered computation bit
    # for bit, so a ranking probe of such a layer scores exactly what an unsteered row does
    pg_width = max(g.limit for g in groups())
    visible = torch.arange(pg_width)[None, :].expand(3, -1) >= 6
    steered = run("fused", groups(), visible=visible)
    plain = run("fused", [ExtraGroup(g.slot, g.rows, g.limit, g.position,
                                     [ExtraRow(frozenset(), 100.0, SPAN) for _ in g.steering]) for g in groups()],
                visible=visible)
    for a, b in zip(steered, plain):
        assert torch.equal(a, b)


def test_bfloat16_inputs_are_attended_in_float32():
    # the result of bfloat16 inputs is the float32 computation on the same (upcast) values, rounded once at
    # the end: alpha never multiplies a rounded logit
    K, V, q, k, v = inputs(torch.bfloat16)
    pg = PaddedGroups.build(groups(), LAYERS, torch.device("cpu"))
    visible = torch.arange(pg.width)[None, :] < pg.limits[:, None]
    for layer in range(LAYERS):
        low = fused(pg, layer, q, k, v, K, V, visible)
        high = fused(pg, layer, q.float(), k.float(), v.float(), K.float(), V.float(), visible)
        assert low.dtype == torch.bfloat16
        assert torch.equal(low, high.to(torch.bfloat16))


def test_groups_mixing_alphas_fall_back_to_the_written_out_form():
    mixed = groups()
    mixed[1].steering[1] = ExtraRow(frozenset([1]), 3.0, SPAN)
    assert PaddedGroups.build(mixed, LAYERS, torch.device("cpu")).scale is None
    assert PaddedGroups.build(groups(), LAYERS, torch.device("cpu")).scale is not None


def test_own_keys_from_the_scratch_row_equal_the_concatenated_ones():
    # a decode forward writes its raw rows' keys to their slots and its extra rows' to the scratch row, in
    # one write; one gather then reads what the slot's columns and the rows' own keys concatenated give,
    # and no slot's row changes
    K, V, q, k, v = inputs()
    pg = PaddedGroups.build(groups(), LAYERS, torch.device("cpu"))
    cache = SlotCache(1, SLOTS, torch.device("cpu"))
    cache.reserve(CAP)
    cache.write_rows(0, SlotCache.prompt_targets(torch.arange(SLOTS), torch.zeros(SLOTS, dtype=torch.long), CAP, HKV),
                     K, V)
    before = cache.keys[0].clone()
    p = pg.out_group * pg.per_group + pg.out_row  # extra row i's padded index: its scratch column
    cache.write_rows(0, SlotCache.row_targets(torch.full((6,), cache.scratch), p, HKV), k, v)
    assert torch.equal(cache.keys[0], before)
    gathered = gather_slots(pg, cache.key_store[0], cache.scratch)
    concatenated = own_keys(pg, gather_slots(pg, cache.keys[0]), k)
    real = torch.zeros(pg.slots.numel(), 1, pg.width + pg.per_group, 1, dtype=torch.bool)
    real[:, :, :pg.width] = True
    real[pg.out_group, :, pg.width + pg.out_row] = True  # padding rows' own columns are never read
    assert torch.equal(gathered * real, concatenated * real)


def test_steered_layers_survive_the_trip_as_bits_past_63_layers():
    # a row's layers travel as int64 words of 63 bits: an 80-layer model's sets arrive whole
    layers = 130
    sets = [frozenset({0, 62, 63, 64, 79}), frozenset(range(0, 130, 7)), frozenset({129}), frozenset()]
    g = ExtraGroup(0, [0, 1, 2, 3], 10, 9, [ExtraRow(s, 100.0, SPAN) for s in sets])
    plain = ExtraGroup(1, [4], 10, 9, [ExtraRow(frozenset({5}), 1.0, SPAN)])  # alpha 1 steers nothing
    pg = PaddedGroups.build([g, plain], layers, torch.device("cpu"))
    got = [frozenset(torch.nonzero(row).flatten().tolist()) for row in pg.steers]
    assert got[:4] == sets and got[4] == frozenset()
    assert pg.any_layer == [any(i in s for s in sets) for i in range(layers)]
