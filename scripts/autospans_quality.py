"""Precision and recall of `--instruction auto` on the hand-labelled prompts, per set and split.

    python scripts/autospans_quality.py                        # both sets, dev and test halves
    python scripts/autospans_quality.py --set second --families   # and per family (placement, form)
    python scripts/autospans_quality.py --set second --split dev --show 10   # ten dev prompts it gets wrong

Two sets, each split into a development half and a test half (seeded shuffle) before any rule was
changed for it; rules are tuned on `dev` only, `test` is what is reported:

- first (`tests/autospans/data/labelled.jsonl`): 173 prompts phrased unlike IFEval's, by the author of
  the rules;
- second (`tests/autospans/data/labelled_others.jsonl`): 122 prompts written to be unlike the first:
  long tasks with the constraint at the end, constraints first or in the middle, fused with the task
  ("but only ...", "while keeping ..."), conditional, negated, numeric, requirement lists, labelled and
  tagged blocks, casual chat, quoted passages, and prompts without any constraint; each tagged with its
  placement and forms.

Scores count the non-white-space characters of the prompt: precision = share of the characters the
detector marks that are constraint characters, recall = share of constraint characters it marks
(micro-averaged over the prompts of the split).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from directer.autospans import detect_spans

FOLDER = Path(__file__).resolve().parents[1] / "tests" / "autospans" / "data"
SETS = {"first": FOLDER / "labelled.jsonl", "second": FOLDER / "labelled_others.jsonl"}
DATA = SETS["first"]


@dataclass
class Score:
    prompts: int = 0
    marked: int = 0  # characters the detector marked
    gold: int = 0  # constraint characters
    both: int = 0
    spanless_given_span: int = 0  # prompts without a constraint that got a span
    spanless: int = 0
    missed_prompts: int = 0  # prompts with a constraint that got no span

    @property
    def precision(self) -> float:
        return self.both / self.marked if self.marked else 1.0

    @property
    def recall(self) -> float:
        return self.both / self.gold if self.gold else 1.0


def load(split: str | None = None, path: Path = DATA) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split in (None, r["split"])]


def characters(prompt: str, ranges) -> set[int]:
    return {i for a, b in ranges for i in range(a, b) if not prompt[i].isspace()}


def gold_ranges(row: dict) -> list[tuple[int, int]]:
    out = []
    for span in row["spans"]:
        start = row["prompt"].find(span)
        assert start >= 0, (row["id"], span)
        out.append((start, start + len(span)))
    return out


def score(rows: list[dict], detect=detect_spans) -> Score:
    s = Score()
    for row in rows:
        prompt = row["prompt"]
        predicted = characters(prompt, detect(prompt))
        gold = characters(prompt, gold_ranges(row))
        s.prompts += 1
        s.marked += len(predicted)
        s.gold += len(gold)
        s.both += len(predicted & gold)
        if not gold:
            s.spanless += 1
            s.spanless_given_span += bool(predicted)
        elif not predicted:
            s.missed_prompts += 1
    return s


def families(rows: list[dict]) -> dict[str, list[dict]]:
    """The prompts of each family: ``place:<where>`` and ``form:<how>`` (a prompt has several forms)."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        for tag in [f"place:{row['place']}"] * ("place" in row) + [f"form:{f}" for f in row.get("forms", [])]:
            out.setdefault(tag, []).append(row)
    return dict(sorted(out.items()))


def _line(label: str, s: Score) -> str:
    return (f"{label}: {s.prompts} prompts, precision {s.precision:.3f}, recall {s.recall:.3f}; "
            f"{s.missed_prompts} prompts with a constraint got no span, "
            f"{s.spanless_given_span} of {s.spanless} without one got a span")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="which", choices=["first", "second", "both"], default="both")
    parser.add_argument("--split", choices=["dev", "test"], default=None)
    parser.add_argument("--families", action="store_true", help="Also score each family (placement, form).")
    parser.add_argument("--show", type=int, default=0, help="Print this many prompts the detector gets wrong.")
    args = parser.parse_args()
    for which in ["first", "second"] if args.which == "both" else [args.which]:
        for split in [args.split] if args.split else ["dev", "test"]:
            _report(which, split, load(split, SETS[which]), args)


def _report(which: str, split: str, rows: list[dict], args) -> None:
    print(_line(f"{which} {split}", score(rows)))
    if args.families:
        for tag, members in families(rows).items():
            print("    " + _line(tag, score(members)))
    shown = 0
    for row in rows:
        if shown >= args.show:
            break
        prompt = row["prompt"]
        found = [prompt[a:b] for a, b in detect_spans(prompt)]
        if characters(prompt, detect_spans(prompt)) != characters(prompt, gold_ranges(row)):
            print(f"  [{row['id']}] {prompt!r}\n      gold: {row['spans']}\n      found: {found}")
            shown += 1


if __name__ == "__main__":
    main()
