"""A self-contained HTML page that shows what the steering did, token by token.

``render_html(result, tokenizer)`` returns one HTML document (inline CSS, no script, no external
resource): the prompt with the steered instruction tokens highlighted, the response with every token
coloured by what happened at its decoding step (gate skip, steered token accepted on k layers, raw
fallback after rejected trials), a legend, the run's statistics and, optionally, the unsteered response
beside it. The static style sheet is the package data file ``steering_view.css``; only the colour scale
of the layer-set sizes is generated here.
"""

from __future__ import annotations

import functools
import html
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable, Sequence

from ..methods.directer import halving_sizes
from ..results import GenerationResult, TokenTrace

__all__ = ["render_html", "token_pieces", "Piece"]

# UTF-8 characters are at most 4 bytes, so an incomplete character never spans more tokens than this;
# a longer run that still decodes to U+FFFD holds invalid bytes and is shown as it is.
_MAX_MERGE = 4
# Tokens of left context used when decoding a piece (sentencepiece drops a leading space without it).
_CONTEXT = 6

_REPLACEMENT = "\ufffd"


@dataclass
class Piece:
    """A run of tokens shown as one unit: normally one token, several when a character spans them."""

    text: str
    indices: list[int]  # positions in the decoded id list


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    if not ids:
        return ""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def token_pieces(tokenizer: Any, ids: Sequence[int], context: Sequence[int] = ()) -> list[Piece]:
    """Decode ``ids`` incrementally into pieces whose texts concatenate to the decoded text.

    Each token's text is what decoding it adds to the text of the tokens before it (with up to
    ``_CONTEXT`` tokens of context, ``context`` supplying the first ones), so a token that carries
    only part of a multi-byte character (its text ends in U+FFFD) is kept together with the next
    token(s) until the character is complete.
    """
    ids = [int(i) for i in ids]
    done: list[int] = [int(i) for i in context][-_CONTEXT:]
    if _decode(tokenizer, done).endswith(_REPLACEMENT):
        done = []
    pieces: list[Piece] = []
    start = 0
    for i in range(len(ids)):
        group = ids[start : i + 1]
        window = done[-_CONTEXT:]
        before = _decode(tokenizer, window)
        after = _decode(tokenizer, window + group)
        last = i + 1 == len(ids)
        if after.endswith(_REPLACEMENT) and len(group) < _MAX_MERGE and not last:
            continue  # an incomplete character: wait for the next token
        text = after[len(before) :] if after.startswith(before) else _decode(tokenizer, group)
        pieces.append(Piece(text, list(range(start, i + 1))))
        done.extend(group)
        start = i + 1
    return pieces


# -- step classification --------------------------------------------------------------------------


def _kind(t: TokenTrace | None) -> str:
    if t is None:
        return "none"
    if t.layers is not None:
        return "acc"
    if t.skipped:
        return "skip"
    if t.trials:
        return "fallback"
    return "raw"


_PRIORITY = {"fallback": 4, "acc": 3, "raw": 2, "skip": 1, "none": 0}


def _num_layers(result: GenerationResult) -> int | None:
    if result.ranking:
        return len(result.ranking)
    sizes = [t.layers for t in result.trace if t.layers is not None] + list(result.stats.accepted)
    return max(sizes) if sizes else None


def _scale_sizes(result: GenerationResult) -> list[int]:
    """The layer-set sizes the colour scale covers, largest first."""
    observed = {t.layers for t in result.trace if t.layers is not None} | set(result.stats.accepted)
    sizes = set(observed)
    n = _num_layers(result)
    if result.method == "directer" and n:
        sizes |= set(halving_sizes(n))
    return sorted(sizes, reverse=True)


def _shade(k: int, sizes: list[int]) -> tuple[str, str]:
    """Background and text colour of a token accepted on ``k`` layers: darker for more layers."""
    hi, lo = max(sizes), min(sizes)
    if hi == lo:
        t = 1.0
    else:
        t = (math.log2(k) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
    lightness = 81 - t * 46  # 81% (fewest layers) .. 35% (all layers)
    saturation = 92 - t * 12
    bg = f"hsl({214 + 14 * t:.0f} {saturation:.0f}% {lightness:.0f}%)"
    fg = "#ffffff" if lightness < 62 else "#0b1f4d"
    return bg, fg


def _step_note(index: int, t: TokenTrace | None, n_layers: int | None) -> str:
    of = f" of {n_layers}" if n_layers else ""
    if t is None:
        return f"step {index}: no trace"
    kind = _kind(t)
    trials = f"{t.trials} trial{'s' if t.trials != 1 else ''}"
    if kind == "skip":
        return f"step {index}: gate skip (model confident, no trial), 0 trials"
    if kind == "acc":
        return f"step {index}: steered token accepted on {t.layers}{of} layers after {trials}"
    if kind == "fallback":
        return f"step {index}: raw fallback, all {trials} rejected"
    return f"step {index}: raw token, no steering tried"


# -- HTML pieces ----------------------------------------------------------------------------------


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _text_html(text: str, marks: bool = True) -> str:
    """Escaped token text; with ``marks`` a newline gets a visible (not copied) return mark before it."""
    out = []
    for j, line in enumerate(text.split("\n")):
        if j:
            out.append('<span class="nl"></span>\n' if marks else "\n")
        out.append(_esc(line))
    return "".join(out)


def _special_ids(tokenizer: Any) -> set[int]:
    try:
        return {int(i) for i in tokenizer.all_special_ids}
    except Exception:  # pragma: no cover - a tokenizer without the attribute
        return set()


def _prompt_html(result: GenerationResult, tokenizer: Any) -> str:
    steered: set[int] = set()
    for start, end in result.instruction_token_spans:
        steered.update(range(start, end))
    special = _special_ids(tokenizer)
    ids = result.prompt_token_ids
    out = []
    for piece in token_pieces(tokenizer, ids):
        classes = ["p"]
        is_steered = any(i in steered for i in piece.indices)
        if is_steered:
            classes.append("steered")
        if all(ids[i] in special for i in piece.indices):
            classes.append("special")
        pos = piece.indices[0] if len(piece.indices) == 1 else f"{piece.indices[0]}-{piece.indices[-1]}"
        note = f"prompt position {pos}" + (" (steered instruction token)" if is_steered else "")
        out.append(
            f'<span class="{" ".join(classes)}" data-pos="{" ".join(map(str, piece.indices))}" '
            f'title="{_esc(note)}">{_text_html(piece.text, marks=False)}</span>'
        )
    return "".join(out)


def _response_html(result: GenerationResult, tokenizer: Any) -> str:
    special = _special_ids(tokenizer)
    n_layers = _num_layers(result)
    ids = result.token_ids
    out = []
    for piece in token_pieces(tokenizer, ids, context=result.prompt_token_ids):
        traces = [result.trace[i] if i < len(result.trace) else None for i in piece.indices]
        # A piece of several tokens takes the most notable step's colour; its tooltip lists them all.
        main = max(traces, key=lambda t: _PRIORITY[_kind(t)])
        kind = _kind(main)
        classes = ["t", kind]
        if kind == "acc":
            classes.append(f"k{main.layers}")
        if all(ids[i] in special for i in piece.indices):
            classes.append("special")
        note = "\n".join(_step_note(i, t, n_layers) for i, t in zip(piece.indices, traces))
        attrs = {
            "class": " ".join(classes),
            "data-step": " ".join(map(str, piece.indices)),
            "data-trials": " ".join(str(t.trials) if t else "" for t in traces),
            "data-layers": " ".join("" if t is None or t.layers is None else str(t.layers) for t in traces),
            "title": note,
        }
        attr_html = " ".join(f'{k}="{_esc(v)}"' for k, v in attrs.items())
        out.append(f"<span {attr_html}>{_text_html(piece.text)}</span>")
    return "".join(out)


def _shown(value: float | None) -> str:
    """A setting as the view prints it ("–" for one the method does not have)."""
    return "–" if value is None else f"{value:g}"


def _chip(cls: str, label: str, style: str = "") -> str:
    style_attr = f' style="{style}"' if style else ""
    return f'<span class="chip {cls}"{style_attr}>{_esc(label)}</span>'


def _legend_html(result: GenerationResult, sizes: list[int], kinds: set[str], special_sample: str) -> str:
    n = _num_layers(result)
    beta, alpha = _shown(result.beta), _shown(result.alpha)

    def item(chips: str, text: str) -> str:
        return f'<div class="item"><span class="chips">{chips}</span><div>{text}</div></div>'

    left = [item(
        _chip("skip", "token"),
        f"<b>Gate skip</b>: the model was sure of its next token (runner-up probability &lt; β&nbsp;=&nbsp;{beta} × "
        "the top one), so no steering was tried: the token is the unsteered one.",
    )]
    if sizes:
        scale = "".join(_chip(f"acc k{k}", str(k)) for k in sizes)
        schedule = " → ".join(str(k) for k in sizes)
        of = f" of {n}" if n else ""
        left.append(item(
            f'<span class="scale">{scale}</span>',
            f"<b>Steered, accepted on <i>k</i>{of} layers</b> (the number; darker = more layers): with the "
            f"instruction's attention keys scaled by α&nbsp;=&nbsp;{alpha} in <i>k</i> layers the model chose a token the "
            f"unsteered model finds plausible (≥ β × its top probability). Trials weaken {schedule} layers until one "
            "passes; the token may equal the unsteered one.",
        ))
    left.append(item(
        _chip("fallback", "token"),
        "<b>Raw fallback</b>: every steered trial was rejected as implausible; the unsteered token was emitted.",
    ))
    if "raw" in kinds:
        left.append(item(_chip("raw", "token"), "<b>Unsteered</b>: no steering was tried at this step."))
    right = [
        item(_chip("steered-demo", "instruction"),
             f"<b>Steered tokens</b>: the instruction, whose keys are scaled by α&nbsp;=&nbsp;{alpha}."),
        item(f'<span class="chip special-demo">{_esc(special_sample)}</span>',
             "<b>Special tokens</b> (dimmed here and in the response)."),
        '<div class="hint">Hover a response token for its step, trials and accepted layer count; '
        '<span class="nl"></span> marks a line break.</div>',
    ]
    return (
        '<section class="card legend"><h2>How to read the colours</h2><div class="legend-grid">'
        '<div><h3>Response: each token is coloured by what the steering did at its step</h3>' + "".join(left)
        + '</div><div><h3>Prompt</h3>' + "".join(right) + "</div></div></section>"
    )


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def _tile(key: str, value: str, sub: str = "", wide: bool = False, title: str = "") -> str:
    cls = "tile wide" if wide else "tile"
    sub_html = f'<div class="s">{_esc(sub)}</div>' if sub else ""
    title_attr = f' title="{_esc(title)}"' if title else ""
    return f'<div class="{cls}"{title_attr}><div class="k">{_esc(key)}</div><div class="v">{_esc(value)}</div>{sub_html}</div>'


def _stats_html(result: GenerationResult, sizes: list[int]) -> str:
    s = result.stats
    steps = s.steps or len(result.trace)
    accepted_total = sum(s.accepted.values())
    raw_steps = sum(1 for t in result.trace if _kind(t) == "raw")
    tried = steps - s.gate_skips

    # One bar of the steps, split by what happened.
    segments = [("skip", s.gate_skips, "gate skips")]
    segments += [(f"acc k{k}", s.accepted.get(k, 0), f"accepted on {k} layers") for k in sizes]
    segments += [("fallback", s.fallbacks, "raw fallbacks"), ("raw", raw_steps, "unsteered")]
    bar = "".join(
        f'<span class="{cls}" style="flex-grow:{count}" title="{_esc(f"{count} {label}")}"></span>'
        for cls, count, label in segments
        if count
    )

    timing = f"ranking {s.ranking_seconds:.2f} s" if s.ranking_seconds else ""
    tiles = [
        _tile("steps", str(steps), f"stopped by {result.finish_reason}"),
        _tile("gate skips", str(s.gate_skips), f"skip rate {_pct(s.gate_skips, steps)}"),
        _tile("steered tokens", str(accepted_total), f"{_pct(accepted_total, steps)} of steps"),
        _tile("raw fallbacks", str(s.fallbacks), f"{_pct(s.fallbacks, steps)} of steps"),
        _tile("trials", str(s.trials), f"{s.trials / tried:.1f} per non-skipped step" if tried else ""),
        _tile("time", f"{s.seconds:.2f} s", timing,
              title=f"prefill, ranking and decoding; first token after {s.first_token_seconds:.2f} s"),
        _tile("top-5 layers", ", ".join(map(str, result.ranking[:5])) if result.ranking else "–",
              "most sensitive first (ranking)" if result.ranking else "no ranking", wide=True),
    ]
    settings = [
        ("method", result.method), ("mode", result.mode), ("α", _shown(result.alpha)), ("β", _shown(result.beta)),
        ("model", result.model),
    ]
    settings_html = "".join(f'<span><span class="k">{_esc(k)}</span> <b>{_esc(v)}</b></span>' for k, v in settings)

    acc_rows = []
    top = max([*s.accepted.values(), 1])
    for k in sizes:
        c = s.accepted.get(k, 0)
        hbar = f'<span class="hbar acc k{k}" style="width:{100 * c / top:.0f}%"></span>' if c else ""
        acc_rows.append(
            f'<tr><th>{_chip(f"acc k{k}", str(k))} layer{"s" if k != 1 else ""}</th>'
            f'<td class="num">{c}</td><td class="barcell">{hbar}</td></tr>'
        )
    acc = (
        '<div class="acc-table"><h3>Acceptances per layer-set size</h3><table>' + "".join(acc_rows) + "</table></div>"
        if acc_rows else ""
    )
    return (
        '<section class="card stats"><div class="stats-head"><h2>Run statistics</h2>'
        f'<div class="settings">{settings_html}</div></div>'
        f'<div class="steps-row"><h3>The {steps} steps by outcome</h3><div class="stepbar">{bar}</div></div>'
        f'<div class="stats-grid"><div class="tiles">{"".join(tiles)}</div>{acc}</div></section>'
    )


@functools.lru_cache(maxsize=1)
def _css() -> str:
    """The page's static style sheet (the package data file ``steering_view.css``)."""
    return resources.files(__package__).joinpath("steering_view.css").read_text(encoding="utf-8")


def _size_css(sizes: Iterable[int], all_sizes: list[int]) -> str:
    rules = []
    for k in sizes:
        bg, fg = _shade(k, all_sizes)
        rules.append(f".acc.k{k} {{ background: {bg}; color: {fg}; }}")
    return "\n".join(rules)


def render_html(
    result: GenerationResult,
    tokenizer: Any,
    unsteered: GenerationResult | None = None,
    title: str | None = None,
) -> str:
    """Render one generation as a self-contained HTML page and return it as a string.

    ``tokenizer`` is the tokenizer the result was generated with (it decodes the prompt and the
    response token by token). With ``unsteered`` (e.g. the same prompt with ``method="none"``) its
    response is shown in a second column. Write the page with ``Path(...).write_text(page, encoding="utf-8")``.
    """
    sizes = _scale_sizes(result)
    kinds = {_kind(t) for t in result.trace}
    specials = _special_ids(tokenizer)
    sample_ids = [i for i in result.prompt_token_ids if i in specials] + [i for i in result.token_ids if i in specials]
    special_sample = _decode(tokenizer, sample_ids[:1]) or "<eos>"
    page_title = title or "DIRECTER steering view"

    instr = ", ".join(f"“{_esc(i)}”" for i in result.instructions) if result.instructions else ""
    sub = [f"model <b>{_esc(result.model)}</b>", f"method <b>{_esc(result.method)}</b>"]
    if instr:
        sub.append(f"instruction {instr}")

    prompt = (
        '<section class="card prompt"><h2>Prompt (as the model sees it)</h2>'
        f'<div class="text">{_prompt_html(result, tokenizer)}</div></section>'
    )
    steps = result.stats.steps or len(result.trace)
    label = "DIRECTER response" if result.method == "directer" else f"Response ({_esc(result.method)})"
    response = (
        f'<section class="card response"><h2>{label}, token by token</h2>'
        f'<div class="text">{_response_html(result, tokenizer)}</div>'
        f'<div class="meta">{steps} tokens, stopped by {_esc(result.finish_reason)}</div></section>'
    )
    columns = response
    if unsteered is not None:
        u_steps = unsteered.stats.steps or len(unsteered.token_ids)
        columns += (
            f'<section class="card unsteered"><h2>Unsteered response (method {_esc(unsteered.method)})</h2>'
            f'<div class="text plain">{_text_html(unsteered.text) or "<i>(empty)</i>"}</div>'
            f'<div class="meta">{u_steps} tokens, stopped by {_esc(unsteered.finish_reason)}</div></section>'
        )
    cols_class = "cols two" if unsteered is not None else "cols"

    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(page_title)}</title>\n<style>\n{_css()}\n{_size_css(sizes, sizes)}\n</style></head>\n"
        "<body><main>\n"
        f'<header><h1>{_esc(page_title)}</h1><span class="sub">{" · ".join(sub)}</span></header>\n'
        f"{prompt}\n{_legend_html(result, sizes, kinds, special_sample)}\n"
        f'<div class="{cols_class}">{columns}</div>\n'
        f"{_stats_html(result, sizes)}\n"
        "</main></body></html>\n"
    )
