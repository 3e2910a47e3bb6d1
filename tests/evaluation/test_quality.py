"""The judge-free quality signals (evaluation/quality.py)."""

from __future__ import annotations

import math

import pytest
import torch

from directer.evaluation.quality import perplexities, repetition, restates_instruction

from tiny import tiny_model


def test_repetition_and_restatement():
    assert repetition("a b c d e f g h") == 0.0
    loop = "the summer breeze " * 10
    assert repetition(loop) > 0.8
    instr = ["Do not use any commas in your response."]
    assert restates_instruction("Do not use any commas in your response. Do not use any commas.", instr)
    assert restates_instruction("do not use any commas", instr)
    assert not restates_instruction("Leaves fall slowly\nGolden light on quiet paths\nAutumn breathes its last", instr)
    assert not restates_instruction("", instr)
    # Over-steered word salad made of the instruction's words (seen with static steering at alpha 100).
    assert restates_instruction("use the any commas in in response your do use not commas any the", instr)
    assert not restates_instruction("Not one comma appears in this response, which is about the sea.", instr)


def test_perplexity_matches_a_direct_computation():
    model = tiny_model("llama")
    prompts, responses = [[5, 6, 7, 8], [9, 10]], [[11, 12, 13], []]
    ppl = perplexities(model, prompts, responses, batch_size=2)
    assert ppl[1] is None
    ids = torch.tensor([prompts[0] + responses[0]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    nll = -sum(logp[3 + i, responses[0][i]] for i in range(3)) / 3
    assert ppl[0] == pytest.approx(math.exp(float(nll)), rel=1e-4)
