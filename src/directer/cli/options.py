"""What the engine commands share: the engine options and the model load after validation."""

from __future__ import annotations

import click

from ..config import SteeringConfig
from ..methods import MODES, method_names

__all__ = ["ATTENTION", "DEVICE_HELP", "DTYPES", "DTYPE_HELP", "engine_options", "load_directer", "quiet_transformers"]


DTYPES = click.Choice(["float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "auto"], case_sensitive=False)
ATTENTION = click.Choice(["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"],
                         case_sensitive=False)
DTYPE_HELP = "Weights' dtype (auto: bfloat16 on a GPU that has it, else float32); float16 with a large alpha is upcast."
DEVICE_HELP = "cpu, cuda, cuda:1, mps, ... (default: cuda if available, else cpu)."


def engine_options(f=None, *, method: bool = True, max_new_tokens: int = 256):
    """Options shared by every command that runs the engine (``method=False``: without --method;
    ``max_new_tokens``: the command's default token limit)."""
    if f is None:
        return lambda g: engine_options(g, method=method, max_new_tokens=max_new_tokens)
    options = [
        click.option("--model", "model", default=None, help="Hugging Face id, local folder or .gguf file (default: the bundled SmolLM2-135M-Instruct)."),
        click.option("--alpha", type=float, default=100.0, show_default=True, help="Key scale factor (1: no steering)."),
        click.option("--beta", type=float, default=0.5, show_default=True, help="Plausibility threshold (Eq. 2): a steered token needs at least beta times the raw top probability."),
        click.option("--mode", type=click.Choice(MODES), default="paper", show_default=True, help="paper: the paper; reference: the authors' released code, quirks included."),
        click.option("--method", default="directer", show_default=True,
                     help=f"{' | '.join(method_names())}, with optional parameters NAME:KEY=VALUE:... "
                          "(e.g. static:alpha=3:layers=0-7, pasta:alpha_p=0.01, directer:ranking=reversed)."),
        click.option("--layers", default=None, help="Layer set of static, pasta, spotlight and instaboost, e.g. 'all' or '0-7,12' (default: all)."),
        click.option("--plausibility-filter", is_flag=True, help="Baselines: emit a steered token only if the raw model finds it plausible (Eq. 2), else the raw token."),
        click.option("--max-new-tokens", type=int, default=max_new_tokens, show_default=True, help="Token limit per response."),
        click.option("--dtype", type=DTYPES, default="float32", show_default=True, help=DTYPE_HELP),
        click.option("--attn-implementation", type=ATTENTION, default=None, help="Attention implementation (default: eager in reference mode, else sdpa)."),
        click.option("--system", default=None, help="System message (default: the chat template's)."),
        click.option("--ranking", "ranking_file", default=None, help="Reuse the layer ranking in this JSON file (from --save-ranking or --json)."),
        click.option("--device", default=None, help=DEVICE_HELP),
    ]
    if not method:
        options = [o for o in options if "--method" not in _option_names(o)]
    for option in reversed(options):
        f = option(f)
    return f


def _option_names(decorator) -> tuple[str, ...]:
    probe = decorator(lambda: None)
    return tuple(n for p in probe.__click_params__ for n in p.opts)


def quiet_transformers() -> None:
    """Keep transformers' info and warning logs off the terminal (our own notices say what matters)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def load_directer(model, dtype, attn_implementation, device, **config):
    """Validate the settings, then load the model (the slow part) and wrap it."""
    SteeringConfig(**config)  # validate alpha, beta, mode, method before the (slow) model load
    from ..api import Directer  # heavy imports (torch, transformers) only once arguments are valid

    quiet_transformers()
    click.echo(f"directer: loading {model or 'the bundled model'} ...", err=True)
    return Directer.from_pretrained(model, dtype=dtype, attn_implementation=attn_implementation, device=device, **config)
