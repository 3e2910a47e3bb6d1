"""Locate instruction spans in a rendered prompt, as token index ranges.

DIRECTER steers by scaling the attention keys of the instruction tokens, so the
engine needs, for every instruction the user marked, the ``[start, end)`` range
of prompt token indices that hold it. :func:`prepare_prompt` renders the prompt
(``prompts.py``), tokenizes it and finds those ranges in one of two modes:

``"paper"`` (default)
    Character-level search inside the message *contents* of the rendered
    prompt, mapped to tokens with the tokenizer's offset mapping: a token
    belongs to the span when its character range overlaps the instruction's.
    Offsets that are missing or wrong are replaced by offsets recomputed from
    incremental decoding, and every span is verified by decoding it.

``"reference"``
    What the authors' released code does: search the prompt ids for the ids of
    the instruction tokenized on its own; the span is the match plus one extra
    token after it (a quirk of their code that we reproduce).

Scope of the search (paper mode). An instruction is looked for in the contents
of the *user* messages first; only if no user message contains it are the other
messages' contents (system, assistant) searched. So an instruction repeated in
the system message and in the user message is steered where the user wrote it,
and ``occurrence`` counts occurrences within that scope only. An instruction
found in no message content is appended to the last user message (or is an
error with ``append_missing=False``). Without a chat template the whole prompt
text is the scope.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..errors import SpanNotFoundError, UsageError
from .prompts import CharRange, RenderedPrompt, compose_user_message, quote, render_prompt, system_instructions
from .token_offsets import (decoded_offsets, encode, offsets_are_sane, overlapping_tokens, span_contains,
                            tokenizer_offsets, tokens_match_text)

__all__ = [
    "MODES",
    "PreparedPrompt",
    "TokenSpan",
    "char_span_to_tokens",
    "compose_user_message",
    "find_subsequence",
    "prepare_prompt",
]

#: The locating modes accepted by :func:`prepare_prompt`.
MODES = ("paper", "reference")

@dataclass(frozen=True)
class TokenSpan:
    """Where one instruction sits in the prompt ids."""

    start: int  # first token index in the prompt ids
    end: int  # exclusive
    text: str  # the instruction it was located for
    char_start: int | None = None  # character offsets in the rendered prompt (None in reference mode)
    char_end: int | None = None

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class PreparedPrompt:
    """A rendered, tokenized prompt and the token spans of its instructions."""

    text: str  # the rendered prompt (chat template applied, generation prompt added)
    input_ids: list[int]
    spans: list[TokenSpan]  # one per instruction, in the order given
    messages: list[dict] | None  # messages actually rendered; None without chat template
    appended: list[str] = field(default_factory=list)  # instructions the prompt lacked, appended to it
    notes: list[str] = field(default_factory=list)  # what the caller should know (e.g. nothing was found to steer)

    @property
    def positions(self) -> list[int]:
        """The token positions to steer: every instruction span's tokens, in order, once."""
        return sorted({i for s in self.spans for i in range(s.start, s.end)})


def prepare_prompt(
    tokenizer: Any,
    prompt: str | Sequence[Mapping[str, str]],
    instructions: Sequence[str],
    *,
    system: str | None = None,
    mode: str = "paper",
    occurrence: int | Sequence[int] = 0,
    chat_template: bool | None = None,
    append_missing: bool = True,
    scope: str = "messages",
) -> PreparedPrompt:
    """Render ``prompt``, tokenize it and locate one token span per instruction.

    Args:
        tokenizer: a Hugging Face tokenizer.
        prompt: a task string (becomes the single user message) or a list of
            chat messages ``{"role": ..., "content": ...}``.
        instructions: the instruction texts to steer, each an exact substring
            of the prompt, or appended to the last user message when missing.
            A single string is accepted as one instruction.
        system: an optional system message, put first.
        mode: ``"paper"`` (character search in message contents) or
            ``"reference"`` (token-id search, as the authors' code did).
        occurrence: which occurrence to steer when the instruction occurs more
            than once (0 = first, -1 = last); one int for all instructions or
            one per instruction. In reference mode it counts token-id matches
            over the whole prompt.
        chat_template: True to require the tokenizer's chat template, False for
            plain text, None to use it when the tokenizer has one.
        append_missing: append instructions not found in the prompt (the
            paper's layout: task, blank line, instructions); when False a
            missing instruction raises SpanNotFoundError.
        scope: ``"messages"`` (the instructions are searched as described above) or
            ``"system"`` (``instructions`` must be empty: each system message's
            text, as a whole, is an instruction, located in the system message).

    Returns:
        A :class:`PreparedPrompt` with the rendered text, its ids and the spans
        in the order the instructions were given.
    """
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; use one of: {', '.join(MODES)}")
    if scope not in ("messages", "system"):
        raise UsageError(f"unknown instruction scope {scope!r}; use 'messages' or 'system'")
    if scope == "system":
        if instructions:
            raise UsageError("scope 'system' takes its instructions from the system message: pass no others")
        instructions = system_instructions(prompt, system)
    instructions = validate_instructions(instructions)
    occurrences = _normalize_occurrences(occurrence, len(instructions))
    rendered = render_prompt(
        tokenizer, prompt, instructions, system=system, chat_template=chat_template, append_missing=append_missing
    )
    instructions = rendered.instructions  # as the prompt words them (case and spacing may differ)
    # Without a template nothing else adds BOS, so let the tokenizer add its
    # special tokens the way the model was trained to see plain text.
    input_ids, offsets = encode(tokenizer, rendered.text, add_special_tokens=rendered.messages is None)
    if mode == "reference":
        spans = [_reference_span(tokenizer, input_ids, instr, occ) for instr, occ in zip(instructions, occurrences)]
    else:
        locator = _PaperLocator(tokenizer, rendered.text, input_ids, offsets)
        spans = [
            locator.locate(instr, _char_start(rendered, instr, occ, scope)) for instr, occ in zip(instructions, occurrences)
        ]
    return PreparedPrompt(text=rendered.text, input_ids=input_ids, spans=spans, messages=rendered.messages,
                          appended=rendered.appended)


def find_subsequence(haystack: Sequence[int], needle: Sequence[int]) -> int:
    """Return the first index where ``needle`` occurs in ``haystack``, or -1.

    An empty needle returns -1: an empty instruction has no span to steer.
    """
    matches = _find_all_subsequences(haystack, needle)
    return matches[0] if matches else -1


def char_span_to_tokens(
    tokenizer: Any,
    text: str,
    input_ids: list[int],
    char_start: int,
    char_end: int,
    offsets: Sequence[CharRange] | None = None,
) -> tuple[int, int]:
    """Map the character range ``[char_start, char_end)`` of ``text`` to a token range.

    The token range is every token whose character range overlaps the given one,
    so a BPE token that merges an edge character with outside text is included.
    ``offsets`` (one ``(start, end)`` per id) are used when they look sane;
    otherwise the tokenizer's offset mapping is tried, then offsets recomputed by
    incremental decoding. Raises SpanNotFoundError when no token overlaps.
    """
    if not 0 <= char_start < char_end <= len(text):
        raise UsageError(
            f"bad character range [{char_start}, {char_end}) for a text of {len(text)} characters; "
            "pass 0 <= char_start < char_end <= len(text)"
        )
    if not offsets_are_sane(offsets, text, len(input_ids)):
        offsets = tokenizer_offsets(tokenizer, text, input_ids)
    ranges = offsets if offsets is not None else decoded_offsets(tokenizer, text, input_ids)
    span = overlapping_tokens(ranges, char_start, char_end)
    if span is None:
        raise SpanNotFoundError(
            f"no token covers characters [{char_start}, {char_end}) ({quote(text[char_start:char_end])}); "
            "check that input_ids are the tokenization of text"
        )
    return span


# --------------------------------------------------------------------------- #
# Argument checking
# --------------------------------------------------------------------------- #


def validate_instructions(instructions: Sequence[str] | str) -> list[str]:
    """Return the instructions as a list, rejecting non-strings and empty texts."""
    if instructions is None:
        raise UsageError("instructions is None; pass a list of instruction strings")
    # A lone string is one instruction, not a list of characters.
    instructions = [instructions] if isinstance(instructions, str) else list(instructions)
    for instr in instructions:
        if not isinstance(instr, str):
            raise UsageError(f"instruction {instr!r} is a {type(instr).__name__}; pass instruction strings")
        if not instr.strip():
            raise UsageError(f"empty instruction: {instr!r}; remove it or give the instruction text")
    return instructions


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _normalize_occurrences(occurrence: int | Sequence[int], count: int) -> list[int]:
    """Expand ``occurrence`` to one int per instruction."""
    if _is_int(occurrence):
        return [occurrence] * count
    if isinstance(occurrence, (bool, str)) or not isinstance(occurrence, Sequence):
        raise UsageError(f"occurrence must be an int or a list of ints, not {occurrence!r}")
    if len(occurrence) != count:
        raise UsageError(
            f"got {len(occurrence)} occurrence values for {count} instructions; "
            "give one per instruction or a single int"
        )
    for occ in occurrence:
        if not _is_int(occ):
            raise UsageError(f"occurrence values must be ints, not {occ!r}")
    return list(occurrence)


def _pick(occurrence: int, available: int, instr: str) -> int:
    """Resolve a possibly negative ``occurrence`` into ``range(available)``, or raise UsageError."""
    if -available <= occurrence < available:
        return occurrence % available
    raise UsageError(
        f"occurrence {occurrence} of instruction {quote(instr)} is out of range: it occurs {available} time(s); "
        f"pass an occurrence from {-available} to {available - 1}"
    )


# --------------------------------------------------------------------------- #
# Paper mode: character search, then characters -> tokens with verification
# --------------------------------------------------------------------------- #


def _char_start(rendered: RenderedPrompt, instr: str, occ: int, scope: str = "messages") -> int:
    """Where the chosen occurrence of ``instr`` starts: in user contents if any holds it, else in the others
    (scope ``"system"``: in the system messages' contents; without a chat template, or with one that folds
    the system message into a user turn, the first occurrence in the prompt, which is the system text's)."""
    starts: list[int] = []
    if scope == "system":
        starts = _occurrences_in(rendered.text, instr, rendered.system_regions)
    starts = starts or _occurrences_in(rendered.text, instr, rendered.user_regions) or _occurrences_in(
        rendered.text, instr, rendered.other_regions
    )
    if not starts:
        raise SpanNotFoundError(
            f"instruction {quote(instr)} is in the messages but not in the rendered prompt "
            "(the chat template changed it); pass mode='reference' or chat_template=False"
        )
    return starts[_pick(occ, len(starts), instr)]


def _occurrences_in(text: str, needle: str, regions: list[CharRange]) -> list[int]:
    """Start positions of non-overlapping occurrences of ``needle`` inside ``regions``, in order."""
    starts: list[int] = []
    for region_start, region_end in sorted(regions):
        pos = text.find(needle, region_start, region_end)
        while pos >= 0:
            starts.append(pos)
            pos = text.find(needle, pos + len(needle), region_end)
    return starts


class _PaperLocator:
    """Maps instruction character ranges of one prompt to verified token spans.

    Prefers the tokenizer's offset mapping; recomputes offsets by incremental
    decoding (once per prompt) when the mapping is missing, insane, or gives a
    span that fails verification.
    """

    def __init__(self, tokenizer: Any, text: str, input_ids: list[int], offsets: list[CharRange] | None):
        self.tokenizer = tokenizer
        self.text = text
        self.input_ids = input_ids
        self.offsets = offsets if offsets_are_sane(offsets, text, len(input_ids)) else None

    @cached_property
    def decoded_offsets(self) -> list[CharRange]:
        return decoded_offsets(self.tokenizer, self.text, self.input_ids)

    def locate(self, instr: str, char_start: int) -> TokenSpan:
        char_end = char_start + len(instr)
        if self.offsets is not None:
            span = overlapping_tokens(self.offsets, char_start, char_end)
            # Offsets shifted by a few characters still give a span containing the
            # text (it grabs a neighbour), so also check each token's characters.
            if (
                span is not None
                and span_contains(self.tokenizer, self.input_ids, span, instr)
                and tokens_match_text(self.tokenizer, self.text, self.input_ids, self.offsets, span)
            ):
                return TokenSpan(*span, instr, char_start, char_end)
        span = overlapping_tokens(self.decoded_offsets, char_start, char_end)
        if span is not None and span_contains(self.tokenizer, self.input_ids, span, instr):
            return TokenSpan(*span, instr, char_start, char_end)
        raise SpanNotFoundError(
            f"could not map instruction {quote(instr)} to tokens (the tokenizer's offsets and decoding both disagree "
            "with the text); pass mode='reference'"
        )


# --------------------------------------------------------------------------- #
# Reference mode: token-id search, as in the authors' code
# --------------------------------------------------------------------------- #


def _find_all_subsequences(haystack: Sequence[int], needle: Sequence[int]) -> list[int]:
    """Start indices of every (possibly overlapping) match of ``needle`` in ``haystack``."""
    haystack, needle = list(haystack), list(needle)
    size = len(needle)
    if not size:
        return []
    return [i for i in range(len(haystack) - size + 1) if haystack[i : i + size] == needle]


def _reference_span(tokenizer: Any, input_ids: list[int], instr: str, occ: int) -> TokenSpan:
    """The authors' span: the instruction's own ids matched in the prompt, plus one token."""
    needle = list(tokenizer(instr, add_special_tokens=False)["input_ids"])
    matches = _find_all_subsequences(input_ids, needle)
    if not matches:
        raise SpanNotFoundError(
            f"instruction {quote(instr)} does not appear as its own tokens in the prompt ids (reference mode); "
            "pass mode='paper', which matches text across token boundaries"
        )
    start = matches[_pick(occ, len(matches), instr)]
    # Their code took the inclusive end index as an exclusive one, steering one
    # token past the instruction; reproduced on purpose.
    end = min(start + len(needle) + 1, len(input_ids))
    return TokenSpan(start, end, instr)
