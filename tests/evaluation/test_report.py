"""The report (evaluation/report.py): Wilson intervals and figures with 0 % and 100 % categories."""

from __future__ import annotations

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
