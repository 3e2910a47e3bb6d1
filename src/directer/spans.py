"""Locate instruction spans in a (chat-)rendered prompt, as token index ranges.

DIRECTER steers by scaling the attention keys of the instruction tokens, so the
engine needs, for every instruction the user marked, the ``[start, end)`` range
of prompt token indices that hold it. This module builds the prompt (applying
the chat template, appending instructions that are not in the prompt yet) and
finds those ranges.

Two locating modes:

``"paper"`` (default)
    Character-level search inside the message *contents* of the rendered
    prompt (never inside template scaffolding such as ``<|im_start|>user``),
    mapped to tokens with the tokenizer's offset mapping: a token belongs to the
    span when its character range overlaps the instruction's. Offsets that are
    missing or wrong are replaced by offsets recomputed from incremental
    decoding, and every span is verified by decoding it.

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

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import SpanNotFoundError, UsageError

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

# Layout of the authors' prompts: task, blank line, instruction(s) one per line.
_TASK_SEPARATOR = "\n\n"
_INSTRUCTION_SEPARATOR = "\n"

# Exceptions a tokenizer may raise when asked for offsets it cannot produce
# (slow tokenizers raise NotImplementedError; wrappers may raise the others).
_OFFSET_ERRORS = (NotImplementedError, ValueError, TypeError, KeyError, AttributeError)

CharRange = tuple[int, int]


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


# --------------------------------------------------------------------------- #
# Small public helpers
# --------------------------------------------------------------------------- #


def find_subsequence(haystack: Sequence[int], needle: Sequence[int]) -> int:
    """Return the first index where ``needle`` occurs in ``haystack``, or -1.

    An empty needle returns -1: an empty instruction has no span to steer.
    """
    matches = _find_all_subsequences(haystack, needle, limit=1)
    return matches[0] if matches else -1


def compose_user_message(task: str, instructions: Sequence[str]) -> str:
    """Append ``instructions`` to ``task`` the way the paper's authors laid prompts out.

    ``task + "\\n\\n" + "\\n".join(instructions)``; the task alone when there
    are no instructions, the instructions alone when the task is empty.
    """
    instructions = [instructions] if isinstance(instructions, str) else list(instructions)
    if not instructions:
        return task
    joined = _INSTRUCTION_SEPARATOR.join(instructions)
    if not task:
        return joined
    return task + _TASK_SEPARATOR + joined


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
    ranges = None
    if offsets is not None and _offsets_are_sane(offsets, text, len(input_ids)):
        ranges = list(offsets)
    if ranges is None:
        ranges = _tokenizer_offsets(tokenizer, text, input_ids)
    if ranges is None:
        ranges = _decoded_offsets(tokenizer, text, input_ids)
    span = _overlapping_tokens(ranges, char_start, char_end)
    if span is None:
        raise SpanNotFoundError(
            f"no token covers characters [{char_start}, {char_end}) ({_quote(text[char_start:char_end])}); "
            "check that input_ids are the tokenization of text"
        )
    return span


# --------------------------------------------------------------------------- #
# prepare_prompt
# --------------------------------------------------------------------------- #


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

    Returns:
        A :class:`PreparedPrompt` with the rendered text, its ids and the spans
        in the order the instructions were given.
    """
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; use one of: {', '.join(MODES)}")
    instructions = _validate_instructions(instructions)
    occurrences = _normalize_occurrences(occurrence, len(instructions))
    use_template = _resolve_chat_template(tokenizer, chat_template)

    if use_template:
        messages = _build_messages(prompt, system)
        messages = _add_missing_to_messages(messages, instructions, append_missing)
        text = _render(tokenizer, messages)
        input_ids, offsets = _encode(tokenizer, text, add_special_tokens=False)
        regions = _content_regions(tokenizer, messages, text)
        user_regions = [r for m, r in zip(messages, regions) if r is not None and m["role"] == "user"]
        other_regions = [r for m, r in zip(messages, regions) if r is not None and m["role"] != "user"]
    else:
        text = _plain_prompt(prompt, system, instructions, append_missing)
        # Without a template nothing else adds BOS, so let the tokenizer add its
        # special tokens the way the model was trained to see plain text.
        input_ids, offsets = _encode(tokenizer, text, add_special_tokens=True)
        messages = None
        user_regions, other_regions = [(0, len(text))], []

    if mode == "reference":
        spans = [
            _reference_span(tokenizer, input_ids, instr, occ) for instr, occ in zip(instructions, occurrences)
        ]
    else:
        locator = _PaperLocator(tokenizer, text, input_ids, offsets)
        spans = []
        for instr, occ in zip(instructions, occurrences):
            # User contents first: an instruction repeated in the system message is
            # steered where the user wrote it (see the module docstring).
            starts = _occurrences_in(text, instr, user_regions) or _occurrences_in(text, instr, other_regions)
            if not starts:
                raise SpanNotFoundError(
                    f"instruction {_quote(instr)} is in the messages but not in the rendered prompt "
                    "(the chat template changed it); pass mode='reference' or chat_template=False"
                )
            char_start = starts[_pick(occ, len(starts), instr, "occurrence")]
            spans.append(locator.locate(instr, char_start, char_start + len(instr)))
    return PreparedPrompt(text=text, input_ids=list(input_ids), spans=spans, messages=messages)


# --------------------------------------------------------------------------- #
# Argument checking and prompt building
# --------------------------------------------------------------------------- #


def _quote(text: str, limit: int = 60) -> str:
    """Quote ``text`` for a one-line error message, truncated to about ``limit`` chars."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)  # repr escapes newlines, keeping errors on one line


def _validate_instructions(instructions: Sequence[str] | str) -> list[str]:
    """Return the instructions as a list, rejecting non-strings and empty texts."""
    if isinstance(instructions, str):
        instructions = [instructions]  # a lone string is one instruction, not a list of characters
    if instructions is None:
        raise UsageError("instructions is None; pass a list of instruction strings")
    result = []
    for instr in instructions:
        if not isinstance(instr, str):
            raise UsageError(f"instruction {instr!r} is a {type(instr).__name__}; pass instruction strings")
        if not instr.strip():
            raise UsageError(f"empty instruction: {instr!r}; remove it or give the instruction text")
        result.append(instr)
    return result


def _normalize_occurrences(occurrence: int | Sequence[int], count: int) -> list[int]:
    """Expand ``occurrence`` to one int per instruction."""
    if isinstance(occurrence, bool):
        raise UsageError(f"occurrence must be an int or a list of ints, not {occurrence!r}")
    if isinstance(occurrence, int):
        return [occurrence] * count
    if isinstance(occurrence, str) or not isinstance(occurrence, Sequence):
        raise UsageError(f"occurrence must be an int or a list of ints, not {occurrence!r}")
    occurrence = list(occurrence)
    if len(occurrence) != count:
        raise UsageError(
            f"got {len(occurrence)} occurrence values for {count} instructions; "
            "give one per instruction or a single int"
        )
    for occ in occurrence:
        if isinstance(occ, bool) or not isinstance(occ, int):
            raise UsageError(f"occurrence values must be ints, not {occ!r}")
    return occurrence


def _pick(index: int, available: int, instr: str, what: str) -> int:
    """Resolve a possibly negative ``index`` into ``range(available)``, or raise UsageError."""
    if -available <= index < available:
        return index % available
    raise UsageError(
        f"{what} {index} of instruction {_quote(instr)} is out of range: it occurs {available} time(s); "
        f"pass an {what} from {-available} to {available - 1}"
    )


def _resolve_chat_template(tokenizer: Any, chat_template: bool | None) -> bool:
    """Decide whether to render with the tokenizer's chat template."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template is None:
        return has_template
    if chat_template and not has_template:
        raise UsageError("the tokenizer has no chat template; pass chat_template=False to use the prompt as plain text")
    return bool(chat_template)


def _build_messages(prompt: str | Sequence[Mapping[str, str]], system: str | None) -> list[dict]:
    """Turn ``prompt`` (+ ``system``) into a fresh list of message dicts, validated."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise UsageError("empty prompt; pass the task text or a list of chat messages")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence):
        messages = []
        for i, message in enumerate(prompt):
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                raise UsageError(
                    f"message {i} is not a {{'role': ..., 'content': ...}} mapping: {_quote(str(message))}"
                )
            if not isinstance(message["content"], str):
                raise UsageError(f"message {i} has non-text content; pass the content as a string")
            messages.append(dict(message))  # copy: we may append instructions to it
        if not messages or not any(m["content"].strip() for m in messages):
            raise UsageError("empty prompt; pass the task text or a non-empty list of chat messages")
    else:
        raise UsageError(f"prompt must be a string or a list of chat messages, not {type(prompt).__name__}")
    if system is not None:
        if any(m["role"] == "system" for m in messages):
            raise UsageError("system given twice (argument and system message); pass only one")
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _add_missing_to_messages(messages: list[dict], instructions: list[str], append_missing: bool) -> list[dict]:
    """Append instructions found in no message content to the last user message."""
    missing = _missing(instructions, [m["content"] for m in messages])
    if not missing:
        return messages
    if not append_missing:
        raise _not_in_prompt(missing[0])
    user_indices = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not user_indices:
        raise UsageError(
            f"instruction {_quote(missing[0])} is not in the messages and there is no user message to append it to; "
            "add a user message"
        )
    last = user_indices[-1]
    messages[last]["content"] = compose_user_message(messages[last]["content"], missing)
    return messages


def _plain_prompt(
    prompt: str | Sequence[Mapping[str, str]], system: str | None, instructions: list[str], append_missing: bool
) -> str:
    """The prompt text used without a chat template, with missing instructions appended."""
    if not isinstance(prompt, str):
        raise UsageError("chat messages need a chat template, and the tokenizer has none; pass the prompt as a string")
    if system is not None:
        raise UsageError("system needs a chat template, and none is used; put it in the prompt text")
    if not prompt.strip():
        raise UsageError("empty prompt; pass the task text")
    missing = _missing(instructions, [prompt])
    if missing and not append_missing:
        raise _not_in_prompt(missing[0])
    return compose_user_message(prompt, missing)


def _missing(instructions: list[str], contents: list[str]) -> list[str]:
    """Instructions (deduplicated, in order) that occur in none of ``contents``."""
    missing: list[str] = []
    for instr in instructions:
        if instr not in missing and not any(instr in content for content in contents):
            missing.append(instr)
    return missing


def _not_in_prompt(instr: str) -> SpanNotFoundError:
    return SpanNotFoundError(
        f"instruction {_quote(instr)} is not in the prompt; add it to the prompt text or pass append_missing=True"
    )


def _render(tokenizer: Any, messages: list[dict]) -> str:
    """Apply the chat template with the generation prompt, as text."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise UsageError("the chat template did not render to text; pass chat_template=False to use plain text")
    return text


def _encode(tokenizer: Any, text: str, *, add_special_tokens: bool) -> tuple[list[int], list[CharRange] | None]:
    """Tokenize ``text``; return the ids and the offset mapping (None when unavailable)."""
    try:
        encoding = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        offsets = encoding.get("offset_mapping")
        return list(encoding["input_ids"]), [tuple(o) for o in offsets] if offsets is not None else None
    except _OFFSET_ERRORS:
        encoding = tokenizer(text, add_special_tokens=add_special_tokens)
        return list(encoding["input_ids"]), None


# --------------------------------------------------------------------------- #
# Content regions: where each message's content sits in the rendered text
# --------------------------------------------------------------------------- #


def _content_regions(tokenizer: Any, messages: list[dict], text: str) -> list[CharRange | None]:
    """Character range of each message's content in ``text`` (None when not found).

    First try exact reconstruction: render the same messages with unique
    sentinel contents, so the template scaffolding is known exactly, and check
    that splicing the real contents into it gives ``text`` (a content like
    "user" then cannot be confused with the ``user`` of the scaffolding).
    Templates that trim contents are handled by also trying stripped contents.
    Templates that change contents otherwise (or branch on them) fall back to
    searching each content in order after the previous one.
    """
    regions = _regions_by_sentinels(tokenizer, messages, text)
    if regions is not None:
        return regions
    return _regions_by_search(messages, text)


def _regions_by_sentinels(tokenizer: Any, messages: list[dict], text: str) -> list[CharRange | None] | None:
    nonce = "Q7zX"
    # Letters and digits only, with a terminator so that sentinel 1 is no prefix of sentinel 10.
    sentinels = [f"DIRECTER{nonce}MSG{i}END" for i in range(len(messages))]
    probe = [{**m, "content": s} for m, s in zip(messages, sentinels)]
    try:
        skeleton = _render(tokenizer, probe)
    except Exception:  # noqa: BLE001 - any template failure just means "use the search fallback"
        return None
    found: list[tuple[int, int]] = []  # (position in skeleton, message index)
    for i, sentinel in enumerate(sentinels):
        count = skeleton.count(sentinel)
        if count > 1:
            return None  # template repeats a content: regions would be ambiguous
        if count == 1:
            found.append((skeleton.index(sentinel), i))
    found.sort()
    for strip in (False, True):
        regions: list[CharRange | None] = [None] * len(messages)
        pieces: list[str] = []
        cursor = 0  # position in skeleton
        out_len = 0  # length of the reconstructed text so far
        for pos, i in found:
            content = messages[i]["content"].strip() if strip else messages[i]["content"]
            pieces.append(skeleton[cursor:pos])
            out_len += pos - cursor
            regions[i] = (out_len, out_len + len(content))
            pieces.append(content)
            out_len += len(content)
            cursor = pos + len(sentinels[i])
        pieces.append(skeleton[cursor:])
        if "".join(pieces) == text:
            return regions
    return None


def _regions_by_search(messages: list[dict], text: str) -> list[CharRange | None]:
    regions: list[CharRange | None] = []
    cursor = 0
    for message in messages:
        region = None
        for content in (message["content"], message["content"].strip()):
            if not content:
                break
            pos = text.find(content, cursor)
            if pos >= 0:
                region = (pos, pos + len(content))
                cursor = region[1]
                break
        regions.append(region)
    return regions


def _occurrences_in(text: str, needle: str, regions: list[CharRange]) -> list[int]:
    """Start positions of non-overlapping occurrences of ``needle`` inside ``regions``, in order."""
    starts: list[int] = []
    for region_start, region_end in sorted(regions):
        pos = text.find(needle, region_start, region_end)
        while pos >= 0:
            starts.append(pos)
            pos = text.find(needle, pos + len(needle), region_end)
    return starts


# --------------------------------------------------------------------------- #
# Paper mode: characters -> tokens, with verification and a decoding fallback
# --------------------------------------------------------------------------- #


class _PaperLocator:
    """Maps instruction character ranges to token spans for one prompt.

    Prefers the tokenizer's offset mapping; recomputes offsets by incremental
    decoding (lazily, once per prompt) when the mapping is missing, insane, or
    gives a span that fails verification.
    """

    def __init__(self, tokenizer: Any, text: str, input_ids: list[int], offsets: list[CharRange] | None):
        self.tokenizer = tokenizer
        self.text = text
        self.input_ids = input_ids
        self.offsets = offsets if offsets is not None and _offsets_are_sane(offsets, text, len(input_ids)) else None
        self._decoded: list[CharRange] | None = None

    def decoded_offsets(self) -> list[CharRange]:
        if self._decoded is None:
            self._decoded = _decoded_offsets(self.tokenizer, self.text, self.input_ids)
        return self._decoded

    def locate(self, instr: str, char_start: int, char_end: int) -> TokenSpan:
        if self.offsets is not None:
            span = _overlapping_tokens(self.offsets, char_start, char_end)
            # Containment alone misses offsets that are shifted by a few characters
            # (the span then grabs a neighbour but still contains the text), so
            # also check the span's tokens against the characters they claim.
            if (
                span is not None
                and _span_contains(self.tokenizer, self.input_ids, span, instr)
                and _tokens_match_text(self.tokenizer, self.text, self.input_ids, self.offsets, span)
            ):
                return TokenSpan(span[0], span[1], instr, char_start, char_end)
        span = _overlapping_tokens(self.decoded_offsets(), char_start, char_end)
        if span is not None and _span_contains(self.tokenizer, self.input_ids, span, instr):
            return TokenSpan(span[0], span[1], instr, char_start, char_end)
        raise SpanNotFoundError(
            f"could not map instruction {_quote(instr)} to tokens (the tokenizer's offsets and decoding both disagree "
            "with the text); pass mode='reference'"
        )


def _offsets_are_sane(offsets: Sequence[CharRange], text: str, n_ids: int) -> bool:
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


def _tokenizer_offsets(tokenizer: Any, text: str, input_ids: list[int]) -> list[CharRange] | None:
    """The tokenizer's offsets for ``text`` when its ids are ``input_ids`` and the offsets are sane."""
    for add_special_tokens in (False, True):
        try:
            ids, offsets = _encode(tokenizer, text, add_special_tokens=add_special_tokens)
        except Exception:  # noqa: BLE001 - any failure means "recompute by decoding"
            return None
        if ids == list(input_ids):
            return offsets if offsets is not None and _offsets_are_sane(offsets, text, len(ids)) else None
    return None


def _overlapping_tokens(ranges: Sequence[CharRange], char_start: int, char_end: int) -> tuple[int, int] | None:
    """``[first, last + 1)`` over tokens whose non-empty range overlaps ``[char_start, char_end)``."""
    hits = [i for i, (s, e) in enumerate(ranges) if s < e and s < char_end and e > char_start]
    if not hits:
        return None
    return hits[0], hits[-1] + 1


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    # No clean-up: it would delete spaces before punctuation and shift positions.
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _span_contains(tokenizer: Any, input_ids: list[int], span: tuple[int, int], instr: str) -> bool:
    """Whether the decoded span contains the instruction (edges' whitespace ignored).

    Internal whitespace is compared squashed as well, as a second chance for
    decoders that render spaces differently (e.g. around special tokens).
    """
    decoded = _decode(tokenizer, input_ids[span[0] : span[1]])
    target = instr.strip()
    return target in decoded or _squash(target) in _squash(decoded)


def _tokens_match_text(
    tokenizer: Any, text: str, input_ids: list[int], offsets: Sequence[CharRange], span: tuple[int, int]
) -> bool:
    """Whether each span token decodes to the characters its offsets claim.

    Tolerant where decoding is legitimately different: edge whitespace
    (SentencePiece drops a word's leading space when decoded alone) and tokens
    holding part of a multi-byte character (they decode to U+FFFD).
    """
    for i in range(span[0], span[1]):
        start, end = offsets[i]
        if start == end:
            continue
        piece = _decode(tokenizer, [input_ids[i]])
        if "\ufffd" in piece:
            continue
        claimed = text[start:end]
        if piece != claimed and piece.strip() != claimed.strip():
            return False
    return True


def _decoded_offsets(tokenizer: Any, text: str, input_ids: list[int]) -> list[CharRange]:
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
    decoded_parts: list[str] = []
    decoded_len = 0
    prefix_offset = read_offset = 0
    pending: list[int] = []
    for i in range(len(input_ids)):
        pending.append(i)
        prefix_text = _decode(tokenizer, input_ids[prefix_offset:read_offset])
        new_text = _decode(tokenizer, input_ids[prefix_offset : i + 1])
        if new_text.endswith("\ufffd") and i + 1 < len(input_ids):
            continue  # incomplete character: wait for the token that completes it
        # Growth in length, not a prefix comparison: a decoder that re-renders the
        # window's start differently still yields the right amount of new text.
        delta = new_text[len(prefix_text) :]
        for j in pending:
            ranges[j] = (decoded_len, decoded_len + len(delta))
        pending = []
        decoded_parts.append(delta)
        decoded_len += len(delta)
        if delta:
            prefix_offset, read_offset = read_offset, i + 1
    decoded = "".join(decoded_parts)
    if decoded == text:
        return ranges
    start_map, end_map = _alignment_maps(decoded, text)
    return [(start_map[s], max(start_map[s], end_map[e])) for s, e in ranges]


def _alignment_maps(source: str, target: str) -> tuple[list[int], list[int]]:
    """Map every position 0..len(source) to a position in ``target``.

    Positions inside equal blocks map exactly. Positions inside differing
    blocks map to the block's target start for range starts and to its target
    end for range ends, so a token covering decoded-only text (e.g. a BOS
    string) maps to an empty range and a token next to target-only text (e.g.
    a leading space the decoder dropped) takes that text.
    """
    start_map: list[int | None] = [None] * (len(source) + 1)
    end_map: list[int | None] = [None] * (len(source) + 1)
    matcher = difflib.SequenceMatcher(None, source, target, autojunk=False)
    # Opcodes come in source order; a boundary position shared by two blocks
    # keeps the value of the earlier block.
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for p in range(i1, i2 + 1):
            if tag == "equal":
                s = e = j1 + (p - i1)
            elif p == i1:
                s = e = j1
            elif p == i2:
                s = e = j2
            else:
                s, e = j1, j2
            if start_map[p] is None:
                start_map[p] = s
            if end_map[p] is None:
                end_map[p] = e
    return [x or 0 for x in start_map], [x or 0 for x in end_map]


# --------------------------------------------------------------------------- #
# Reference mode: token-id search, as in the authors' code
# --------------------------------------------------------------------------- #


def _find_all_subsequences(haystack: Sequence[int], needle: Sequence[int], limit: int | None = None) -> list[int]:
    """Start indices of every (possibly overlapping) match of ``needle`` in ``haystack``."""
    haystack, needle = list(haystack), list(needle)
    if not needle:
        return []
    first, size = needle[0], len(needle)
    matches: list[int] = []
    pos = 0
    while True:
        try:
            pos = haystack.index(first, pos, len(haystack) - size + 1) if len(haystack) >= size else -1
        except ValueError:
            pos = -1
        if pos < 0:
            return matches
        if haystack[pos : pos + size] == needle:
            matches.append(pos)
            if limit is not None and len(matches) >= limit:
                return matches
        pos += 1


def _reference_span(tokenizer: Any, input_ids: list[int], instr: str, occ: int) -> TokenSpan:
    """The authors' span: the instruction's own ids matched in the prompt, plus one token."""
    needle = list(tokenizer(instr, add_special_tokens=False)["input_ids"])
    matches = _find_all_subsequences(input_ids, needle)
    if not matches:
        raise SpanNotFoundError(
            f"instruction {_quote(instr)} does not appear as its own tokens in the prompt ids (reference mode); "
            "pass mode='paper', which matches text across token boundaries"
        )
    start = matches[_pick(occ, len(matches), instr, "occurrence")]
    # Their code took the inclusive end index as an exclusive one, steering one
    # token past the instruction; reproduced on purpose.
    end = min(start + len(needle) + 1, len(input_ids))
    return TokenSpan(start, end, instr)
