"""Incremental detokenisation for streaming: each new token decodes a short window, not the response.

Decoding the whole response after every token costs time quadratic in its length. Like the streamers
of transformers and vLLM, :class:`IncrementalText` keeps two offsets: ``prefix`` (where the window
starts: a few tokens back, so that a tokenizer which joins or spaces tokens by their neighbours decodes
them in context) and ``read`` (the tokens whose text is already out). A token that ends inside a
multi-byte character decodes to U+FFFD; its text waits for the next token.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IncrementalText"]


class IncrementalText:
    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.text = ""
        self.prefix = 0
        self.read = 0

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=self.skip)

    def update(self, tokens: list[int]) -> str:
        """The text of ``tokens`` (the response so far, grown since the last call) that can no longer change."""
        if len(tokens) <= self.read:
            return self.text
        before = self._decode(tokens[self.prefix:self.read])
        window = self._decode(tokens[self.prefix:])
        if window.endswith("\ufffd") or not window.startswith(before):
            return self.text  # an unfinished character (or a window to re-read with the next token)
        self.text += window[len(before):]
        self.prefix, self.read = self.read, len(tokens)
        return self.text
