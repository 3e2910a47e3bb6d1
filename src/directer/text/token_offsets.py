"""Token character offsets: from the tokenizer's offset mapping when it is sane, else recomputed by
incremental decoding, and the checks that a token span really holds an instruction's text.

``spans.py`` maps an instruction's character range in the rendered prompt to tokens with these; they
exist because offset mappings are missing (slow tokenizers), shifted or wrong often enough to matter.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from .prompts import CharRange

__all__ = [
    "alignment_maps",
    "decode",
    "decoded_offsets",
    "encode",
    "offsets_are_sane",
    "overlapping_tokens",
    "span_contains",
    "squash",
    "tokenizer_offsets",
    "tokens_match_text",
]

# What a tokenizer may raise when asked for offsets it cannot produce
# (slow tokenizers raise NotImplementedError; wrappers may raise the others).
_OFFSET_ERRORS = (NotImplementedError, ValueError, TypeError, KeyError, AttributeError)


def encode(tokenizer: Any, text: str, *, add_special_tokens: bool) -> tuple[list[int], list[CharRange] | None]:
    """Tokenize ``text``; return the ids and the offset mapping (None when unavailable)."""
    try:
        encoding = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        offsets = encoding.get("offset_mapping")
        return list(encoding["input_ids"]), [tuple(o) for o in offsets] if offsets is not None else None
    except _OFFSET_ERRORS:
        encoding = tokenizer(text, add_special_tokens=add_special_tokens)
        return list(encoding["input_ids"]), None


def offsets_are_sane(offsets: Sequence[CharRange] | None, text: str, n_ids: int) -> bool:
    """Whether offsets are usable: one per id, in range, monotonic, covering every visible character.

    Zero-width ranges (added special tokens) are ignored; equal or overlapping
    ranges are allowed because byte-level BPE splits one character over tokens;
    whitespace may be left uncovered because some tokenizers exclude it.
    """
    if offsets is None or len(offsets) != n_ids:
        return False
    covered = bytearray(len(text))
    last_start = last_end = 0
    for pair in offsets:
        try:
            start, end = int(pair[0]), int(pair[1])
        except (TypeError, ValueError, IndexError):
            return False
        if not 0 <= start <= end <= len(text):
            return False
        if start == end:
            continue
        if start < last_start or end < last_end:
            return False
        last_start, last_end = start, end
        covered[start:end] = b"\x01" * (end - start)
    return all(covered[i] or ch.isspace() for i, ch in enumerate(text))


def tokenizer_offsets(tokenizer: Any, text: str, input_ids: list[int]) -> list[CharRange] | None:
    """The tokenizer's offsets for ``text`` when its ids are ``input_ids`` and the offsets are sane."""
    for add_special_tokens in (False, True):
        try:
            ids, offsets = encode(tokenizer, text, add_special_tokens=add_special_tokens)
        except Exception:  # noqa: BLE001 - any failure means "recompute by decoding"
            return None
        if ids == list(input_ids):
            return offsets if offsets_are_sane(offsets, text, len(ids)) else None
    return None


def overlapping_tokens(ranges: Sequence[CharRange], char_start: int, char_end: int) -> tuple[int, int] | None:
    """``[first, last + 1)`` over tokens whose non-empty range overlaps ``[char_start, char_end)``."""
    hits = [i for i, (s, e) in enumerate(ranges) if s < e and s < char_end and e > char_start]
    return (hits[0], hits[-1] + 1) if hits else None


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    # No clean-up: it would delete spaces before punctuation and shift positions.
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def squash(text: str) -> str:
    return " ".join(text.split())


def span_contains(tokenizer: Any, input_ids: list[int], span: tuple[int, int], instr: str) -> bool:
    """Whether the decoded span contains the instruction (edges' whitespace ignored).

    Internal whitespace is compared squashed as well, as a second chance for
    decoders that render spaces differently (e.g. around special tokens).
    """
    decoded = decode(tokenizer, input_ids[span[0] : span[1]])
    target = instr.strip()
    return target in decoded or squash(target) in squash(decoded)


def tokens_match_text(
    tokenizer: Any, text: str, input_ids: list[int], offsets: Sequence[CharRange], span: tuple[int, int]
) -> bool:
    """Whether each span token decodes to the characters its offsets claim.

    Tolerant where decoding is legitimately different: edge whitespace
    (SentencePiece drops a word's leading space when decoded alone) and tokens
    holding part of a multi-byte character (they decode to U+FFFD).
    """
    for i in range(*span):
        start, end = offsets[i]
        if start == end:
            continue
        piece = decode(tokenizer, [input_ids[i]])
        claimed = text[start:end]
        if "\ufffd" not in piece and piece != claimed and piece.strip() != claimed.strip():
            return False
    return True


# --------------------------------------------------------------------------- #
# Offsets recomputed by incremental decoding
# --------------------------------------------------------------------------- #


def decoded_offsets(tokenizer: Any, text: str, input_ids: list[int]) -> list[CharRange]:
    """Per-token character ranges in ``text``, recomputed by incremental decoding.

    Decoding growing prefixes gives each token's end position, but costs
    O(n^2); instead decode a sliding window (the previously emitted chunk plus
    the new tokens) and take the growth of the text, as streaming detokenizers
    do. That keeps SentencePiece's context-dependent leading spaces right and
    holds back tokens that end inside a multi-byte character (they decode to
    U+FFFD) until the character completes; all held tokens then share its range.
    The decoded string may differ slightly from ``text`` (an added BOS, spaces
    around special tokens); positions are then carried over by alignment.
    """
    ranges: list[CharRange] = [(0, 0)] * len(input_ids)
    decoded = ""
    prefix_offset = read_offset = 0
    pending: list[int] = []
    for i in range(len(input_ids)):
        pending.append(i)
        prefix_text = decode(tokenizer, input_ids[prefix_offset:read_offset])
        new_text = decode(tokenizer, input_ids[prefix_offset : i + 1])
        if new_text.endswith("\ufffd") and i + 1 < len(input_ids):
            continue  # incomplete character: wait for the token that completes it
        # Growth in length, not a prefix comparison: a decoder that re-renders the
        # window's start differently still yields the right amount of new text.
        delta = new_text[len(prefix_text) :]
        for j in pending:
            ranges[j] = (len(decoded), len(decoded) + len(delta))
        pending = []
        decoded += delta
        if delta:
            prefix_offset, read_offset = read_offset, i + 1
    if decoded == text:
        return ranges
    start_map, end_map = alignment_maps(decoded, text)
    return [(start_map[s], max(start_map[s], end_map[e])) for s, e in ranges]


def alignment_maps(source: str, target: str) -> tuple[list[int], list[int]]:
    """Map every position 0..len(source) to a position in ``target``.

    Positions inside equal blocks map exactly. Positions inside differing
    blocks map to the block's target start for range starts and to its target
    end for range ends, so a token covering decoded-only text (e.g. a BOS
    string) maps to an empty range and a token next to target-only text (e.g.
    a leading space the decoder dropped) takes that text.
    """
    start_map = [0] * (len(source) + 1)
    end_map = [0] * (len(source) + 1)
    opcodes = difflib.SequenceMatcher(None, source, target, autojunk=False).get_opcodes()
    # Backwards, so that a boundary shared by two blocks keeps the earlier block's value.
    for tag, i1, i2, j1, j2 in reversed(opcodes):
        for p in range(i1, i2 + 1):
            if tag == "equal":
                start_map[p] = end_map[p] = j1 + (p - i1)
            elif p == i1:
                start_map[p] = end_map[p] = j1
            elif p == i2:
                start_map[p] = end_map[p] = j2
            else:
                start_map[p], end_map[p] = j1, j2
    return start_map, end_map
