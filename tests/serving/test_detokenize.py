"""Incremental detokenisation (serving/detokenize.py): after every token the streamed text is a prefix of
the whole response's decoded text, and once the response is complete it equals it."""

from __future__ import annotations

from directer.serving.detokenize import IncrementalText

from bundled_tokenizer import load_bundled_tokenizer

TEXTS = [
    "Autumn leaves fall slowly, golden light on the old stone wall.",
    "Ünïcödé: naïve café — “quotes”, emoji 🍂🍁 and 日本語のテキスト, then   several   spaces.",
    "def f(x):\n    return x ** 2  # code, with\ttabs and newlines\n\n",
]


def test_streamed_text_is_always_a_prefix_and_ends_equal_to_the_full_decode():
    tok = load_bundled_tokenizer()
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
        full = tok.decode(ids, skip_special_tokens=True)
        inc = IncrementalText(tok)
        for k in range(1, len(ids) + 1):
            streamed = inc.update(ids[:k])
            assert full.startswith(streamed), (text, k)
        assert streamed == full


def test_each_token_decodes_a_short_window():
    tok = load_bundled_tokenizer()
    calls = []

    class Counting:
        def decode(self, ids, skip_special_tokens=True):
            calls.append(len(ids))
            return tok.decode(ids, skip_special_tokens=skip_special_tokens)

    ids = tok.encode(" ".join(["word"] * 300), add_special_tokens=False)
    inc = IncrementalText(Counting())
    for k in range(1, len(ids) + 1):
        inc.update(ids[:k])
    assert max(calls) <= 4  # never the whole 300-token response
