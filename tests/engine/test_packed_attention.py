"""Copy-free steered attention (engine/packed_attention.py) equals scaling a copy of the keys, on the
five architectures, with left padding and with instruction columns evicted from a sliding window."""

from __future__ import annotations

import pytest
import torch

from directer.engine.attention import enable_packed_attention
from directer.engine.extra_rows import ExtraGroup, ExtraRow
from directer.engine.packed_attention import PACKED_KWARG, PackedPlan
from directer.engine.slot_cache import SlotCache

from tiny import ARCHS, SPAN, copy_scaled_logits, random_prompt, tiny_model


@pytest.mark.parametrize("window", [None, 6])
def test_copy_free_trials_equal_scaling_a_copy(window):
    archs = ARCHS if window is None else ("gemma3", "mistral")
    for arch in archs:
        model = tiny_model(arch, **({} if window is None else {"sliding_window": window}))
        enable_packed_attention(model)
        long, short = random_prompt(7, 20), random_prompt(8, 16)  # short is left-padded by 4 columns
        span = SPAN if window is None else list(range(12, 18))  # window 6: 12-13 evicted, 14-17 held
        trials = [(frozenset({0, 2, 3}), 100.0), (frozenset({1}), 5.0), (frozenset(range(4)), 1.0)]
        cache = SlotCache(4, 3, torch.device("cpu"))
        slots = torch.tensor([2, 0])
        lengths = [len(long), len(short)]
        cache.place(slots, lengths)
        ids = torch.tensor([long, [0] * 4 + short])
        mask = (ids != 0).long()
        mask[0] = 1
        with torch.no_grad():
            model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                                use_cache=False, **{PACKED_KWARG: PackedPlan(cache, slots, prefill_pads=[0, 4])})
            for prompt, slot in ((long, 2), (short, 0)):
                cols = torch.tensor(span)[torch.tensor(span) < len(prompt) - 1]  # a column is a position
                rows = [ExtraRow(layers, alpha, cols) for layers, alpha in trials]
                group = ExtraGroup(slot, torch.arange(len(rows)), len(prompt) - 1, len(prompt) - 1, rows)
                plan = PackedPlan(cache, torch.empty(0, dtype=torch.long), None, 0, [group])
                hidden = model.get_decoder()(input_ids=torch.tensor([[prompt[-1]]] * len(rows)),
                                             position_ids=torch.tensor([[len(prompt) - 1]] * len(rows)),
                                             use_cache=False, **{PACKED_KWARG: plan}).last_hidden_state[:, 0]
                got = model.get_output_embeddings()(hidden)
                kept = [s for s in span if s < len(prompt) - 1]
                for (layers, alpha), logits in zip(trials, got):
                    expected = copy_scaled_logits(model, prompt, kept, layers, alpha)
                    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0, msg=f"{arch} {layers}")
        steered = copy_scaled_logits(model, long, span, trials[0][0], 100.0)
        assert not torch.allclose(steered, copy_scaled_logits(model, long, span, trials[0][0], 1.0)), arch


def test_a_forward_costs_the_same_aten_ops_whatever_its_number_of_trial_groups():
    """Launches independent of the trial count: every extra row of a forward is attended with one
    batched product per layer, so one source sequence's trials and four sources' cost the same ops."""
    from directer.evaluation.host_cost import count_host_cost

    model = tiny_model("llama")
    enable_packed_attention(model)
    prompts = [random_prompt(20 + i, 12 + i) for i in range(4)]
    cache = SlotCache(4, 4, torch.device("cpu"))
    slots = torch.arange(4)
    width = max(len(p) for p in prompts)
    cache.place(slots, [len(p) for p in prompts])
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    trials = [(frozenset({0, 2}), 100.0), (frozenset({1}), 100.0), (frozenset(range(4)), 1.0)]

    def counted(sources: int) -> tuple[int, int]:
        groups, ids_, pos = [], [], []
        for slot in range(sources):
            p = prompts[slot]
            rows = [ExtraRow(layers, alpha, [1, 2]) for layers, alpha in trials]
            groups.append(ExtraGroup(slot, list(range(len(ids_), len(ids_) + len(rows))), len(p) - 1, len(p) - 1, rows))
            ids_ += [p[-1]] * len(rows)
            pos += [len(p) - 1] * len(rows)
        plan = PackedPlan(cache, torch.empty(0, dtype=torch.long), None, 0, groups)
        with count_host_cost() as cost:
            model.get_decoder()(input_ids=torch.tensor(ids_)[:, None], position_ids=torch.tensor(pos)[:, None],
                                attention_mask=torch.ones(len(ids_), 1, 1, 1, dtype=torch.bool),
                                use_cache=False, **{PACKED_KWARG: plan})
        return cost.ops, cost.syncs, dict(cost.sync_ops)

    with torch.no_grad():
        model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                            use_cache=False, **{PACKED_KWARG: PackedPlan(cache, slots, prefill_pads=[width - len(p) for p in prompts])})
        one, four = counted(1), counted(4)
    assert one == four, (one, four)
    assert one[1] == 0, one  # and no synchronisation inside the forward
