"""Stop strings (the API's ``stop``): end a response when its text contains one, cut the text before it,
and hold back, while streaming, the tail that may still become one (a stop string may span chunks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["StopStrings", "stable_text"]


def stable_text(text: str) -> str:
    # A token that ends inside a multi-byte character decodes to U+FFFD until the character completes.
    return text[:-1] if text.endswith("\ufffd") else text


@dataclass
class StopStrings:
    tokenizer: Any
    strings: Sequence[str]

    def __post_init__(self) -> None:
        self.longest = max((len(s) for s in self.strings), default=0)
        # Tokens whose text can hold the longest stop string (a token decodes to at least one
        # character, but a character may take several byte tokens): checking this tail is enough.
        self.tail_tokens = 4 * self.longest + 8

    def __call__(self, tokens: list[int]) -> bool:
        """Whether the response's text (up to its last token) contains a stop string: the engine's check
        after every token, on the tail only (the check has run after every earlier token)."""
        if not self.strings:
            return False
        tail = self.tokenizer.decode(tokens[-self.tail_tokens:], skip_special_tokens=True)
        return any(s in tail for s in self.strings)

    def cut(self, text: str) -> tuple[str, bool]:
        """The text before the first stop string, and whether there was one."""
        hits = [i for i in (text.find(s) for s in self.strings) if i >= 0]
        return (text[:min(hits)], True) if hits else (text, False)

    def safe(self, text: str) -> str:
        """The prefix of an unfinished response that can be streamed: no stop string in it, and none of
        its last characters the start of one that the next tokens may complete."""
        text, hit = self.cut(text)
        if hit or not self.strings:
            return text
        for k in range(min(self.longest - 1, len(text)), 0, -1):
            if any(s.startswith(text[-k:]) for s in self.strings):
                return text[:-k]
        return text
