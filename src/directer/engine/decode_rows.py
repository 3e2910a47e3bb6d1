"""What a decode forward carries, row by row (the engine's scheduling of one forward).

One row per slot of every advancing sequence (the raw rows first: their logits open the step; then the
biased rows of filtered streams: their logits are the step's trial), followed by the extra rows: a
speculating sequence's trials beside its raw row, ranking probes, and the trials of sequences whose
gate opened on the previous forward. Each source sequence's extra rows form one
:class:`~directer.engine.extra_rows.ExtraGroup`; the rows whose logits are read are listed in
``logit_rows`` (raw rows first, every later one a trial), the probes' first rows in ``probe_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .extra_rows import ExtraGroup, ExtraRow
from .prefill import ranking_probes, trial_row
from .sequence import Sequence

__all__ = ["DecodeRows", "decode_rows", "probes_now"]


@dataclass
class DecodeRows:
    slot_list: list[int]  # the slot of each slot row
    positions: list[int]  # and its position
    ids: list[int]  # every row's input token (slot rows, then extra rows)
    pos: list[int]  # every row's position
    groups: list[ExtraGroup] = field(default_factory=list)
    logit_rows: list[tuple[Sequence, int | None, int]] = field(default_factory=list)  # (seq, trial k or None: raw, row)
    probe_rows: list[tuple[Sequence, int]] = field(default_factory=list)  # (sequence, its first probe row)


def decode_rows(raw: list[Sequence], running: list[Sequence], num_layers: int, trials: str,
                speculate: Callable[[Sequence, int, int], bool]) -> DecodeRows:
    """The rows of a decode forward whose raw rows are ``raw`` (each writes the column of its position;
    an extra row sees its slot's columns before its step's position, and its own key). ``trials``:
    EngineOptions.trials; ``speculate(seq, rows, sequences)``: whether a sequence's trials ride in its
    raw row's forward. Marks what it issues (probes, trials) on the sequences."""
    slot_rows = [(s, s.slot) for s in raw] + [(s, s.steered_slot) for s in raw if s.steered_slot is not None]
    positions = [s.step_pos for s, _ in slot_rows]
    out = DecodeRows([slot for _, slot in slot_rows], positions, [s.step_input for s, _ in slot_rows], list(positions))
    out.logit_rows += [(s, None, i) for i, s in enumerate(raw)]
    out.logit_rows += [(s, 0, i) for i, (s, _) in enumerate(slot_rows)
                       if s.streamed and (s.steered_slot is None or i >= len(raw))]
    extra: list[tuple[Sequence, int, int, list[ExtraRow], list[int | None]]] = []  # (seq, input, position, rows, ks)
    for s in raw:  # speculation: a ranked sequence's trials in its raw row's forward
        if s.schedule and not s.streamed and speculate(s, len(s.schedule), len(raw)):
            rows = [trial_row(s, t) for t in s.schedule]
            extra.append((s, s.step_input, s.step_pos, rows, list(range(len(rows)))))
    for s in running:
        if probes_now(s):  # probe l steers layer l alone, on the last prompt token
            n = len(s.input_ids)
            rows = ranking_probes(s, num_layers)
            extra.append((s, s.input_ids[-1], n - 1, rows, [None] * len(rows)))
            s.probes_issued = True
    for s in running:
        todo = s.to_do() if s.state == "trials" else []
        if not todo:
            continue
        if trials == "first":
            todo = todo[:1]
        s.issued.update(todo)
        rows = [trial_row(s, s.trials()[k]) for k in todo]
        extra.append((s, s.step_input, s.step_pos, rows, todo))

    for s, token, p, rows, ks in extra:
        first = len(out.ids)
        out.ids += [token] * len(rows)
        out.pos += [p] * len(rows)
        out.groups.append(ExtraGroup(s.slot, list(range(first, len(out.ids))), p, p, rows))
        if ks[0] is None:
            out.probe_rows.append((s, first))
        else:
            out.logit_rows += [(s, k, first + j) for j, k in enumerate(ks)]
            s.stats.trial_rows += len(rows)
    return out


def probes_now(seq: Sequence) -> bool:
    """Probes ride along with the all-layer trial when the first step's gate opens (its later trials
    need the ranking, and on these prompts the all-layer trial is mostly rejected), else with the
    second raw row: a first token the gate lets through costs the prefill alone."""
    return seq.needs_probes and (bool(seq.tokens) or seq.state in ("trials", "ranking"))
