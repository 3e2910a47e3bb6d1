"""The comparison table of an evaluation run: accuracy, paired differences to `none`, quality, steering."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .quality import repetition, restates_instruction
from .stats import mcnemar, paired_bootstrap

__all__ = [
    "ANSWER_METRICS",
    "METRICS",
    "breakdown_table",
    "category_table",
    "compare",
    "markdown_table",
    "MethodSummary",
    "summarize_method",
    "summarize_time",
    "timing_conditions",
    "to_json",
]


@dataclass
class MethodSummary:
    method: str
    n: int
    prompt_strict: float
    prompt_loose: float
    inst_strict: float
    inst_loose: float
    diffs: dict[str, list[float]] = field(default_factory=dict)  # metric -> [diff, low, high] vs none
    mcnemar: list[float] | None = None  # [none-only, method-only, p]
    perplexity: float | None = None  # median over responses
    repetition: float = 0.0  # mean share of repeated word 4-grams
    length: float = 0.0  # mean generated tokens
    cut: float = 0.0  # share stopped by the token limit
    restated: float = 0.0  # share that merely restates the instruction
    gate_skip: float = 0.0  # share of steps the gate skipped
    fallback: float = 0.0  # share of steps whose trials were all rejected
    trials_per_token: float = 0.0
    accepted: dict[str, int] = field(default_factory=dict)  # layer-set size -> count
    no_span: int = 0  # prompts where no instruction span was detected (decoded unsteered)
    seconds_per_token: float | None = None  # decoding wall time per generated token (batched as run)
    time_ratio: float | None = None  # seconds_per_token relative to `none` in the same run
    timing: list[str] = field(default_factory=list)  # the threads/device the records were timed with
    time_note: str = ""  # why there is no time ratio although both were timed
    categories: dict[str, list[float]] = field(default_factory=dict)  # category -> [strict, loose, count]
    # Items with a reference answer (GSM8K-Format, task files): share answered right, and share with the
    # format followed (strict) and the answer right; None when the run has no answers.
    task_acc: float | None = None
    both_strict: float | None = None
    mcnemar_task: list[float] | None = None  # [none-only, method-only, p] on the answers


METRICS = ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose")
#: Computed over the items that have a reference answer.
ANSWER_METRICS = ("task_acc", "both_strict")


def _answered(scores: Sequence[Any]) -> list[Any]:
    return [s for s in scores if s.answer is not None]


def summarize_method(method: str, records: Sequence[dict], scores: Sequence[Any],
                     by_instruction: bool = False) -> MethodSummary:
    """One method's row; ``by_instruction``: per-instruction rows (whole ids) instead of IFEval's categories."""
    n_inst = [len(s.strict) for s in scores]
    steps = sum(r["stats"]["steps"] for r in records) or 1
    accepted: dict[str, int] = {}
    for r in records:
        for size, count in r["stats"]["accepted"].items():
            accepted[size] = accepted.get(size, 0) + count
    cats: dict[str, list[int]] = {}
    for s in scores:
        for iid, st, lo in zip(s.instruction_ids, s.strict, s.loose):
            c = cats.setdefault(iid if by_instruction else iid.split(":")[0], [0, 0, 0])
            c[0] += st
            c[1] += lo
            c[2] += 1
    ppl = [r["perplexity"] for r in records if r.get("perplexity") is not None]
    answered = _answered(scores)
    return MethodSummary(
        method=method,
        n=len(records),
        # Format accuracy over the items that have checks (a task file may hold answer-only items).
        prompt_strict=_mean([s.prompt_strict for s in scores if s.instruction_ids]),
        prompt_loose=_mean([s.prompt_loose for s in scores if s.instruction_ids]),
        inst_strict=sum(sum(s.strict) for s in scores) / max(1, sum(n_inst)),
        inst_loose=sum(sum(s.loose) for s in scores) / max(1, sum(n_inst)),
        perplexity=statistics.median(ppl) if ppl else None,
        repetition=_mean([repetition(r["response"]) for r in records]),
        length=_mean([r["num_tokens"] for r in records]),
        cut=_mean([r["finish_reason"] == "length" for r in records]),
        restated=_mean([restates_instruction(r["response"], r["spans"]) for r in records]),
        gate_skip=sum(r["stats"]["gate_skips"] for r in records) / steps,
        fallback=sum(r["stats"]["fallbacks"] for r in records) / steps,
        trials_per_token=sum(r["stats"]["trials"] for r in records) / steps,
        accepted=dict(sorted(accepted.items(), key=lambda kv: -int(kv[0]))),
        no_span=sum(1 for r in records if not r["spans"]),
        seconds_per_token=summarize_time(records),
        timing=timing_conditions(records),
        categories={k: [v[0] / v[2], v[1] / v[2], v[2]] for k, v in sorted(cats.items())},
        task_acc=_mean([bool(s.answer) for s in answered]) if answered else None,
        both_strict=_mean([s.both_strict for s in answered]) if answered else None,
    )


def compare(base: tuple[Sequence[dict], Sequence[Any]], other: tuple[Sequence[dict], Sequence[Any]],
            summary: MethodSummary, seed: int = 0) -> None:
    """Fill ``summary.diffs`` and ``summary.mcnemar`` against the baseline (records aligned by prompt)."""
    (rb, sb), (ro, so) = base, other
    assert [r["key"] for r in rb] == [r["key"] for r in ro], "runs must cover the same prompts in the same order"
    checked = [i for i, s in enumerate(sb) if s.instruction_ids]  # items with format checks
    cb, co = [sb[i] for i in checked], [so[i] for i in checked]
    n_inst = [len(s.strict) for s in cb]
    pairs = {
        "prompt_strict": ([s.prompt_strict for s in cb], [s.prompt_strict for s in co], None),
        "prompt_loose": ([s.prompt_loose for s in cb], [s.prompt_loose for s in co], None),
        "inst_strict": ([_mean(s.strict) for s in cb], [_mean(s.strict) for s in co], n_inst),
        "inst_loose": ([_mean(s.loose) for s in cb], [_mean(s.loose) for s in co], n_inst),
    }
    if checked:
        for name, (a, b, w) in pairs.items():
            d = paired_bootstrap(a, b, weights=w, seed=seed)
            summary.diffs[name] = [d.diff, d.low, d.high]
        only_base, only_other, p = mcnemar([s.prompt_strict for s in cb], [s.prompt_strict for s in co])
        summary.mcnemar = [only_base, only_other, p]
    with_answer = [i for i, s in enumerate(sb) if s.answer is not None]
    if with_answer:
        for name, value in (("task_acc", lambda s: bool(s.answer)), ("both_strict", lambda s: s.both_strict)):
            d = paired_bootstrap([value(sb[i]) for i in with_answer], [value(so[i]) for i in with_answer], seed=seed)
            summary.diffs[name] = [d.diff, d.low, d.high]
        only_base, only_other, p = mcnemar([bool(sb[i].answer) for i in with_answer],
                                           [bool(so[i].answer) for i in with_answer])
        summary.mcnemar_task = [only_base, only_other, p]
    base_time = summarize_time(rb)
    # A ratio of times taken with different thread counts or devices would measure the machine, not the method.
    if base_time and summary.seconds_per_token is not None:
        base_timing = timing_conditions(rb)
        if base_timing == summary.timing:
            summary.time_ratio = summary.seconds_per_token / base_time
        else:
            summary.time_note = f"timed with {', '.join(summary.timing)}; none with {', '.join(base_timing)}"


def summarize_time(records: Sequence[dict]) -> float | None:
    if not records or not all("cost_seconds" in r for r in records):
        return None
    return sum(r["cost_seconds"] for r in records) / (sum(r["num_tokens"] for r in records) or 1)


def timing_conditions(records: Sequence[dict]) -> list[str]:
    """The distinct (threads, device) settings the records were timed with; "unrecorded" for older records."""
    seen = {f"{t['threads']} threads on {t['device']}" if (t := r.get("timing")) else "unrecorded" for r in records}
    return sorted(seen)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def markdown_table(summaries: Sequence[MethodSummary]) -> str:
    """Accuracy (with paired 95% intervals against `none`), quality and steering columns; task accuracy
    and format-and-answer columns when the items have reference answers."""
    answers = any(s.task_acc is not None for s in summaries)
    names = ["method", "n", "prompt strict", "prompt loose", "inst. strict", "inst. loose", "McNemar p (prompt strict)"]
    if answers:
        names += ["task acc.", "format strict + task", "McNemar p (task)"]
    names += ["perplexity", "repeated 4-grams", "length", "cut", "restates", "gate skip", "fallback", "trials/token",
              "time/token"]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for s in summaries:
        cells = [s.method, str(s.n)] + [_metric_cell(s, m) for m in METRICS] + [_mcnemar_cell(s.mcnemar)]
        if answers:
            cells += [_metric_cell(s, m) for m in ANSWER_METRICS] + [_mcnemar_cell(s.mcnemar_task)]
        cells += [f"{s.perplexity:.2f}" if s.perplexity is not None else "", f"{100 * s.repetition:.1f}%",
                  f"{s.length:.0f}", f"{100 * s.cut:.1f}%", f"{100 * s.restated:.1f}%", f"{100 * s.gate_skip:.1f}%",
                  f"{100 * s.fallback:.1f}%", f"{s.trials_per_token:.2f}", _time_cell(s)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metric_cell(s: MethodSummary, metric: str) -> str:
    value = getattr(s, metric)
    if value is None:
        return ""
    cell = f"{100 * value:.1f}"
    if metric in s.diffs:
        d, lo, hi = s.diffs[metric]
        cell += f" ({100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}])"
    return cell


def _mcnemar_cell(m: list[float] | None) -> str:
    return f"{m[2]:.3f} ({int(m[0])}↔{int(m[1])})" if m else ""


def _time_cell(s: MethodSummary) -> str:
    if s.seconds_per_token is None:
        return ""
    cell = f"{1000 * s.seconds_per_token:.0f} ms"
    if s.time_ratio is not None:
        return cell + f" ({s.time_ratio:.2f}x)"
    return cell + (" (no ratio: timed unlike none)" if s.time_note else "")


def category_table(summaries: Sequence[MethodSummary], label: str = "category") -> str:
    cats = sorted({c for s in summaries for c in s.categories})
    lines = [f"| {label} | n | " + " | ".join(f"{s.method} strict / loose" for s in summaries) + " |",
             "|" + "---|" * (2 + len(summaries))]
    for c in cats:
        n = next((int(s.categories[c][2]) for s in summaries if c in s.categories), 0)
        cells = [f"{100 * s.categories[c][0]:.1f} / {100 * s.categories[c][1]:.1f}" if c in s.categories else ""
                 for s in summaries]
        lines.append(f"| {c} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_table(summaries: Sequence[MethodSummary]) -> str:
    """:func:`category_table`, labelled by what its rows are (IFEval categories or whole instruction ids)."""
    by_id = any(":" in c for s in summaries for c in s.categories)
    return category_table(summaries, "instruction" if by_id else "category")


def to_json(summaries: Sequence[MethodSummary]) -> list[dict]:
    return [asdict(s) for s in summaries]
