"""Method specs and the registry (methods/registry.py), and the rule that a method is one module."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import directer.methods
from directer.errors import UsageError
from directer.methods import METHODS, make_method, method_names, parse_layers, registry

from tiny import greedy, prompts, run, tiny_model

DOCS = Path(__file__).resolve().parents[2] / "docs" / "methods.md"


def test_parse_layers():
    assert parse_layers(None) is None and parse_layers("all") is None
    assert parse_layers("0-3,8, 10-11") == (0, 1, 2, 3, 8, 10, 11)
    with pytest.raises(UsageError):
        parse_layers("a-b")


def test_method_specs_and_their_errors():
    m = make_method("static:alpha=3:layers=0-7", layers=(1,))
    assert m.alpha == 3.0 and m.layers == tuple(range(8))
    assert make_method("pasta", plausibility_filter=True).filter
    assert not make_method("pasta:filter=0", plausibility_filter=True).filter
    for spec, msg in [("nope", "unknown method 'nope'"), ("pasta:beta", "KEY=VALUE"),
                      ("pasta:alpha=3", "no parameter 'alpha'"), ("static:alpha=x", "invalid value 'x'"),
                      ("instaboost:m=0", "invalid instaboost m"), ("spotlight:target=1.5", "invalid spotlight"),
                      ("directer:ranking=best", "unknown directer ranking"), ("none:filter=1", "no parameter")]:
        with pytest.raises(UsageError, match=msg):
            make_method(spec)


def test_built_in_methods_are_listed_in_order():
    assert method_names()[:6] == ["none", "directer", "static", "pasta", "spotlight", "instaboost"]


def test_a_new_module_is_a_new_method(tmp_path, monkeypatch):
    """The example of docs/methods.md, dropped into the package's folder, works with nothing else changed."""
    example = re.search(r"`src/directer/methods/late_static.py`:\n\n```python\n(.*?)```", DOCS.read_text(), re.S)
    assert example, "docs/methods.md lost its example method"
    (tmp_path / "late_static.py").write_text(example.group(1))
    monkeypatch.setattr(directer.methods, "__path__", [*directer.methods.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_imported", False)
    try:
        assert "late_static" in method_names()
        method = make_method("late_static:start=3:alpha=2")
        assert (type(method).__name__, method.start, method.alpha) == ("LateStatic", 3, 2.0)
        model = tiny_model("llama")
        expected = [greedy(model, p) for p in prompts()]
        assert [o.token_ids for o in run(model, prompts(), "late_static:start=100")] == expected  # never steers
        late = run(model, prompts(), "late_static:start=3")
        early = run(model, prompts(), "static")
        assert all(o.trace[2].trials == 0 and o.trace[3].trials == 1 for o in late)
        assert [o.token_ids[:3] for o in late] == [g[:3] for g in expected]
        assert [o.token_ids for o in late] != [o.token_ids for o in early]
    finally:
        METHODS.pop("late_static", None)
        sys.modules.pop("directer.methods.late_static", None)


def test_out_of_range_layers_name_the_valid_range_once():
    with pytest.raises(UsageError) as exc_info:
        make_method("static:layers=0-99").schedule(None, 30)
    assert str(exc_info.value) == "--layers 30-99 out of range: the model has 30 layers, 0-29"
