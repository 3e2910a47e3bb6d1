"""Build and render the prompt in which ``spans.py`` locates the instructions.

The prompt is a task string (the single user message) or a list of chat
messages, plus an optional system message. Instructions found in no message
content are appended to the last user message the way the paper's authors laid
prompts out: task, blank line, one instruction per line. The chat template is
applied with the generation prompt, and the character range of each message's
content in the rendered text is recovered, so that instructions are searched in
contents, never in template scaffolding such as ``<|im_start|>user``. Without a
chat template the prompt is plain text (chat messages joined into it, system first,
a blank line apart; a warning says so once) and the whole text is the content.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpanNotFoundError, UsageError

__all__ = [
    "NO_TEMPLATE_NOTICE",
    "SYSTEM_INSTRUCTIONS",
    "CharRange",
    "RenderedPrompt",
    "build_messages",
    "compose_user_message",
    "find_instructions",
    "missing_instructions",
    "not_in_prompt",
    "quote",
    "render_prompt",
    "system_instructions",
]

CharRange = tuple[int, int]

# ``instructions="system"``: the system message, as a whole, is the instruction span.
SYSTEM_INSTRUCTIONS = "system"

# The one rule for tokenizers without a chat template, everywhere (API, CLI, batch files, server).
NO_TEMPLATE_NOTICE = ("the model's tokenizer has no chat template: prompts are used as plain text, chat messages "
                      "joined into it (contents in order, system first, a blank line apart)")


@dataclass(frozen=True)
class RenderedPrompt:
    """The rendered prompt text and where the message contents sit in it."""

    text: str
    messages: list[dict] | None  # the messages rendered; None without a chat template
    user_regions: list[CharRange]  # contents of the user messages, in message order
    other_regions: list[CharRange]  # contents of the other messages (system, assistant)
    instructions: list[str] = field(default_factory=list)  # as found in the prompt (case, spacing), in order
    appended: list[str] = field(default_factory=list)  # the instructions the prompt lacked, appended to it
    system_regions: list[CharRange] = field(default_factory=list)  # contents of the system messages


def compose_user_message(task: str, instructions: Sequence[str]) -> str:
    """Append ``instructions`` to ``task`` the way the paper's authors laid prompts out.

    ``task + "\\n\\n" + "\\n".join(instructions)``; the task alone when there
    are no instructions, the instructions alone when the task is empty.
    """
    instructions = [instructions] if isinstance(instructions, str) else list(instructions)
    if not instructions:
        return task
    joined = "\n".join(instructions)
    return f"{task}\n\n{joined}" if task else joined


def quote(text: str, limit: int = 60) -> str:
    """Quote ``text`` for a one-line error message, truncated to about ``limit`` chars."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)  # repr escapes newlines, keeping errors on one line


def render_prompt(
    tokenizer: Any,
    prompt: str | Sequence[Mapping[str, str]],
    instructions: list[str],
    *,
    system: str | None = None,
    chat_template: bool | None = None,
    append_missing: bool = True,
) -> RenderedPrompt:
    """Render ``prompt`` (+ ``system``), appending the ``instructions`` it lacks.

    ``chat_template``: True to require the tokenizer's chat template, False for
    plain text, None to use it when the tokenizer has one. With
    ``append_missing=False`` a missing instruction raises SpanNotFoundError.
    """
    if not _use_chat_template(tokenizer, chat_template):
        if chat_template is None:  # the tokenizer has none: say once what happens instead
            warnings.warn(NO_TEMPLATE_NOTICE, stacklevel=2)
        plain = _plain_text(build_messages(prompt, system))
        instructions = find_instructions(instructions, [plain])
        text, appended = _plain_prompt(plain, instructions, append_missing)
        return RenderedPrompt(text, None, [(0, len(text))], [], list(instructions), appended)
    messages = build_messages(prompt, system)
    contents = [m["content"] for m in messages if m["role"] == "user"] + [m["content"] for m in messages
                                                                          if m["role"] != "user"]
    instructions = find_instructions(instructions, contents)
    appended = _append_missing(messages, instructions, append_missing)
    text = _render(tokenizer, messages)
    regions = _content_regions(tokenizer, messages, text)
    user = [r for m, r in zip(messages, regions) if r is not None and m["role"] == "user"]
    other = [r for m, r in zip(messages, regions) if r is not None and m["role"] != "user"]
    system_regions = [r for m, r in zip(messages, regions) if r is not None and m["role"] == "system"]
    return RenderedPrompt(text, messages, user, other, list(instructions), appended, system_regions)


def find_instructions(instructions: Sequence[str], contents: Sequence[str]) -> list[str]:
    """Each instruction as the prompt words it: the text itself where it occurs verbatim, else the first
    passage of ``contents`` (searched in order) that equals it ignoring case and spacing, else the text
    itself (then it is missing, and appended). So ``-i "Do not use any commas."`` finds "do not use any
    commas." in the prompt instead of appending a second copy."""
    found = []
    for instr in instructions:
        if any(instr in c for c in contents):
            found.append(instr)
            continue
        words = instr.split()
        pattern = re.compile(r"\s+".join(re.escape(w) for w in words), re.IGNORECASE) if words else None
        match = next((m for c in contents if pattern is not None for m in [pattern.search(c)] if m), None)
        found.append(match.group(0) if match else instr)
    return found


# --------------------------------------------------------------------------- #
# Building the messages or the plain text
# --------------------------------------------------------------------------- #


def _use_chat_template(tokenizer: Any, chat_template: bool | None) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template and not has_template:
        raise UsageError("the tokenizer has no chat template; pass chat_template=False to use the prompt as plain text")
    return has_template if chat_template is None else bool(chat_template)


def build_messages(prompt: str | Sequence[Mapping[str, str]], system: str | None) -> list[dict]:
    """Turn ``prompt`` (+ ``system``) into a fresh, validated list of message dicts."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise UsageError("empty prompt; pass the task text or a list of chat messages")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, Sequence):
        messages = []
        for i, message in enumerate(prompt):
            if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
                raise UsageError(f"message {i} is not a {{'role': ..., 'content': ...}} mapping: {quote(str(message))}")
            if not isinstance(message["content"], str):
                raise UsageError(f"message {i} has non-text content; pass the content as a string")
            messages.append(dict(message))  # a copy: instructions may be appended to it
        if not any(m["content"].strip() for m in messages):
            raise UsageError("empty prompt; pass the task text or a non-empty list of chat messages")
    else:
        raise UsageError(f"prompt must be a string or a list of chat messages, not {type(prompt).__name__}")
    if system is not None:
        if any(m["role"] == "system" for m in messages):
            raise UsageError("system given twice (argument and system message); pass only one")
        messages.insert(0, {"role": "system", "content": system})
    return messages


def system_instructions(prompt: str | Sequence[Mapping[str, str]], system: str | None) -> list[str]:
    """``instructions="system"``: the text of each non-empty system message (surrounding whitespace left
    out), or a one-line error when the prompt has none."""
    found = [m["content"].strip() for m in build_messages(prompt, system) if m["role"] == "system"]
    found = [text for text in found if text]
    if not found:
        raise UsageError("instructions 'system' steer the system message, but the prompt has none: give one "
                         "(--system TEXT, system=..., or a {'role': 'system', 'content': ...} message) or name the "
                         "instructions")
    return found


def _append_missing(messages: list[dict], instructions: list[str], append_missing: bool) -> list[str]:
    """Append the instructions found in no message content to the last user message; return them."""
    missing = missing_instructions(instructions, [m["content"] for m in messages])
    if not missing:
        return []
    if not append_missing:
        raise not_in_prompt(missing[0])
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise UsageError(
            f"instruction {quote(missing[0])} is not in the messages and there is no user message to append it to; "
            "add a user message"
        )
    users[-1]["content"] = compose_user_message(users[-1]["content"], missing)
    return missing


def _plain_text(messages: list[dict]) -> str:
    """Messages as plain text, for a model without a chat template: their contents, a blank line apart."""
    return "\n\n".join(m["content"] for m in messages if m["content"].strip())


def _plain_prompt(prompt: str, instructions: list[str], append_missing: bool) -> tuple[str, list[str]]:
    """The prompt text used without a chat template, with the missing instructions appended (and those)."""
    missing = missing_instructions(instructions, [prompt])
    if missing and not append_missing:
        raise not_in_prompt(missing[0])
    return compose_user_message(prompt, missing), missing


def missing_instructions(instructions: Sequence[str], contents: Sequence[str]) -> list[str]:
    """Instructions (deduplicated, in order) that occur in none of ``contents``."""
    missing: list[str] = []
    for instr in instructions:
        if instr not in missing and not any(instr in content for content in contents):
            missing.append(instr)
    return missing


def not_in_prompt(instr: str) -> SpanNotFoundError:
    return SpanNotFoundError(
        f"instruction {quote(instr)} is not in the prompt (case and spacing ignored); add it to the prompt text, "
        "or drop --strict-instructions / pass append_missing=True to append it"
    )


def _render(tokenizer: Any, messages: list[dict]) -> str:
    """Apply the chat template with the generation prompt, as text."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise UsageError("the chat template did not render to text; pass chat_template=False to use plain text")
    return text


# --------------------------------------------------------------------------- #
# Content regions: where each message's content sits in the rendered text
# --------------------------------------------------------------------------- #


def _content_regions(tokenizer: Any, messages: list[dict], text: str) -> list[CharRange | None]:
    """Character range of each message's content in ``text`` (None when not found).

    Exact reconstruction first: render the messages with unique sentinel
    contents, so the scaffolding is known exactly, and check that splicing the
    real (or, for templates that trim, stripped) contents into it gives
    ``text``; a content like "user" then cannot be confused with the ``user``
    of the scaffolding. Templates that change contents otherwise (or branch on
    them) fall back to searching each content after the previous one.
    """
    regions = _regions_by_sentinels(tokenizer, messages, text)
    return regions if regions is not None else _regions_by_search(messages, text)


def _regions_by_sentinels(tokenizer: Any, messages: list[dict], text: str) -> list[CharRange | None] | None:
    # Letters and digits only, with a terminator so that sentinel 1 is no prefix of sentinel 10.
    sentinels = [f"DIRECTERQ7zXMSG{i}END" for i in range(len(messages))]
    try:
        skeleton = _render(tokenizer, [{**m, "content": s} for m, s in zip(messages, sentinels)])
    except Exception:  # noqa: BLE001 - any template failure means "use the search fallback"
        return None
    if any(skeleton.count(s) > 1 for s in sentinels):
        return None  # the template repeats a content: its region would be ambiguous
    found = sorted((skeleton.index(s), i) for i, s in enumerate(sentinels) if s in skeleton)
    for strip in (False, True):
        regions: list[CharRange | None] = [None] * len(messages)
        rebuilt = ""
        cursor = 0  # position in skeleton
        for pos, i in found:
            content = messages[i]["content"].strip() if strip else messages[i]["content"]
            rebuilt += skeleton[cursor:pos]
            regions[i] = (len(rebuilt), len(rebuilt) + len(content))
            rebuilt += content
            cursor = pos + len(sentinels[i])
        if rebuilt + skeleton[cursor:] == text:
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
