"""What the engine commands share: the engine options and the model load after validation."""

from __future__ import annotations

import click

from ..config import SteeringConfig
from ..methods import MODES, method_names

__all__ = ["engine_options", "load_directer"]


def engine_options(f=None, *, method: bool = True):
    """Options shared by every command that runs the engine (``method=False``: without --method)."""
    if f is None:
        return lambda g: engine_options(g, method=method)
    options = [
        click.option("--model", "model", default=None, help="Hugging Face id, local folder or .gguf file (default: the bundled SmolLM2-135M-Instruct)."),
        click.option("--alpha", type=float, default=100.0, show_default=True, help="Key scale factor."),
        click.option("--beta", type=float, default=0.5, show_default=True, help="Plausibility threshold."),
        click.option("--mode", default="paper", show_default=True, help=f"{' | '.join(MODES)}: the paper, or the authors' released code."),
        click.option("--method", default="directer", show_default=True,
                     help=f"{' | '.join(method_names())}, with optional parameters NAME:KEY=VALUE:... "
                          "(e.g. static:alpha=3:layers=0-7, pasta:alpha_p=0.01, directer:ranking=reversed)."),
        click.option("--layers", default=None, help="Layer set of static, pasta, spotlight and instaboost, e.g. 'all' or '0-7,12' (default: all)."),
        click.option("--plausibility-filter", is_flag=True, help="Baselines: emit a steered token only if the raw model finds it plausible (Eq. 2), else the raw token."),
        click.option("--max-new-tokens", type=int, default=None, help="Token limit per response (default: 256; eval: 512, so that few responses are cut)."),
        click.option("--dtype", default="float32", show_default=True, help="float32 | bfloat16 | float16 | auto."),
        click.option("--attn-implementation", default=None, help="eager | sdpa | ... (default: eager in reference mode, else sdpa)."),
        click.option("--system", default=None, help="System message (default: the chat template's)."),
        click.option("--ranking", "ranking_file", default=None, help="Reuse the layer ranking in this JSON file."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)."),
    ]
    if not method:
        options = [o for o in options if "--method" not in _option_names(o)]
    for option in reversed(options):
        f = option(f)
    return f


def _option_names(decorator) -> tuple[str, ...]:
    probe = decorator(lambda: None)
    return tuple(n for p in probe.__click_params__ for n in p.opts)


def load_directer(model, dtype, attn_implementation, device, **config):
    from ..api import Directer  # heavy imports (torch, transformers) only once arguments are valid

    SteeringConfig(**config)  # validate alpha, beta, mode, method before the (slow) model load
    click.echo(f"directer: loading {model or 'the bundled model'} ...", err=True)
    return Directer.from_pretrained(model, dtype=dtype, attn_implementation=attn_implementation, device=device, **config)
