"""Multi-row linears as ``W @ x.T`` (engine/row_matmul.py): the same products as ``nn.Linear`` up to
float rounding, ``nn.Linear`` itself outside the switch, for one row and in other threads, and the
engine's tokens independent of the choice."""

from __future__ import annotations

import threading

import pytest
import torch

from directer.engine.row_matmul import MAX_ROWS, install, padded, transposed, wanted

from tiny import ARCHS, prompts, run_engine, tiny_model, tokens


def _linears(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.Linear(40, 8, bias=False))


@pytest.mark.parametrize("rows", [2, 3, 5, 7, 9, 17, 31, 50])
def test_transposed_product_equals_linear(rows):
    net, ref = _linears(), _linears()
    assert install(net) == 2
    x = torch.randn(rows, 1, 24)
    with torch.no_grad(), transposed():
        got = net(x)
    with torch.no_grad():
        want = ref(x)
    assert got.shape == want.shape == (rows, 1, 8) and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_outside_the_switch_and_for_one_row_it_is_linear_bit_for_bit():
    net, ref = _linears(), _linears()
    install(net)
    install(net)  # a second install changes nothing
    x, one, many = torch.randn(6, 24), torch.randn(1, 24), torch.randn(MAX_ROWS + 1, 24)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))
        with transposed():
            assert torch.equal(net(one), ref(one))
            assert torch.equal(net(many), ref(many))  # past MAX_ROWS: nn.Linear
        with transposed(False):
            assert torch.equal(net(x), ref(x))


def test_the_switch_belongs_to_its_thread():
    net, ref = _linears(), _linears()
    install(net)
    x = torch.randn(6, 24)
    seen = {}
    with torch.no_grad(), transposed():
        t = threading.Thread(target=lambda: seen.setdefault("y", net(x)))
        t.start()
        t.join()
        assert torch.equal(seen["y"], ref(x))


def test_padded_widths_cover_the_rows():
    assert [padded(r) for r in (1, 2, 3, 4, 5, 8, 9, 16, 17, 24, 25, 31, 33, 50)] == \
        [1, 2, 4, 4, 8, 8, 16, 16, 24, 24, 32, 32, 40, 56]


def test_auto_means_cpu_float32_and_a_bad_choice_is_named():
    cpu = torch.device("cpu")
    assert wanted("auto", cpu, torch.float32)
    assert not wanted("auto", cpu, torch.bfloat16)
    assert not wanted("auto", torch.device("cuda"), torch.float32)
    assert wanted("transposed", torch.device("cuda"), torch.float32)
    assert not wanted("stock", cpu, torch.float32)
    with pytest.raises(ValueError, match="unknown matmul choice 'fast'"):
        wanted("fast", cpu, torch.float32)


def test_auto_with_a_model_is_decided_by_timing_both_products_once(monkeypatch):
    from directer.engine import row_matmul

    model = tiny_model("llama")
    row_matmul._DECISIONS.clear()
    calls = []
    real = row_matmul.product
    monkeypatch.setattr(row_matmul, "product", lambda w, x: calls.append(x.shape[0]) or real(w, x))
    decision = wanted("auto", torch.device("cpu"), torch.float32, model)
    assert isinstance(decision, bool) and sorted(set(calls)) == [2, 8]  # both widths were timed
    calls.clear()
    assert wanted("auto", torch.device("cpu"), torch.float32, model) is decision and not calls  # cached
    assert not wanted("auto", torch.device("cpu"), torch.bfloat16, model)  # never timed off float32


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_tokens_do_not_depend_on_the_product(arch):
    ps = prompts(3)
    stock = run_engine(tiny_model(arch), ps, matmul="stock")
    fast = run_engine(tiny_model(arch), ps, matmul="transposed")
    assert tokens(fast) == tokens(stock)
    for a, b in zip(fast, stock):
        assert [t.trials for t in a.trace] == [t.trials for t in b.trace]
        torch.testing.assert_close(torch.tensor(a.raw_logprobs), torch.tensor(b.raw_logprobs), rtol=0, atol=1e-5)
