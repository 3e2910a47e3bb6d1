"""The report (evaluation/report.py): Wilson intervals and figures with 0 % and 100 % categories."""

from __future__ import annotations

import json


def test_wilson_interval_contains_the_proportion():
    # Rounding once put the lower bound of 0/27 above 0, which the report's error bars refused.
    from directer.evaluation.report import wilson

    for n in range(1, 61):
        for k in range(n + 1):
            lo, hi = wilson(k / n, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)


def test_report_figures_with_zero_and_full_categories():
    from directer.evaluation.report import _figures
    from directer.evaluation.summary import MethodSummary

    summaries = [MethodSummary(m, 27, 0.0, 0.0, 1.0, 1.0, categories={"combination": [0.0, 0.0, 27],
                                                                      "startend": [1.0, 1.0, 21]})
                 for m in ("none", "directer")]
    figs = _figures(summaries)
    assert set(figs) >= {"accuracy", "categories"} and all(f.startswith(b"\x89PNG") for f in figs.values())


def test_steering_figure_leaves_out_none_and_is_absent_without_steering():
    from directer.evaluation.report import _figures
    from directer.evaluation.summary import MethodSummary

    def summary(m):
        return MethodSummary(m, 4, 0.5, 0.5, 0.5, 0.5, categories={"combination": [0.5, 0.5, 4]})

    assert "steering" not in _figures([summary("none")])
    assert "steering" in _figures([summary("none"), summary("directer")])


def test_no_disagreement_heading_when_nothing_disagrees(tmp_path):
    from dataclasses import asdict

    from directer.evaluation.report import write_report
    from directer.evaluation.runs import RunConfig, responses_path
    from directer.evaluation.tasks.ifeval import load_ifeval

    prompts = load_ifeval(limit=2)
    config = RunConfig(model="m", alpha=100.0, beta=0.5, mode="paper", layers=None, max_new_tokens=8,
                       selection={"limit": 2, "sample": None, "seed": 0, "keys": [p.key for p in prompts]},
                       methods=["none", "directer"])
    (tmp_path / "config.json").write_text(json.dumps(asdict(config)))
    stats = {"steps": 3, "gate_skips": 3, "trials": 0, "accepted": {}, "fallbacks": 0}
    for method in config.methods:  # the same responses: nothing to show side by side
        records = [{"key": p.key, "prompt": p.prompt, "response": "Same answer.", "spans": [], "stats": stats,
                    "finish_reason": "eos", "num_tokens": 3, "perplexity": 1.5} for p in prompts]
        responses_path(tmp_path, method).write_text("".join(json.dumps(r) + "\n" for r in records))
    html, md = write_report(tmp_path)
    assert "disagree" not in html.read_text() and "disagree" not in md.read_text()
    assert "IFEval report" in md.read_text()
