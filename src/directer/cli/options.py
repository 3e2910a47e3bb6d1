"""What the engine commands share: the engine options and the model load after validation."""

from __future__ import annotations

import click

from ..config import SteeringConfig
from ..methods import MODES, method_names

__all__ = ["ATTENTION", "cache_memory_option", "cache_tokens_option", "check_cache_tokens", "DEVICE_HELP", "DEVICE_MAP_HELP", "DTYPES", "DTYPE_HELP", "check_placement", "device_map_option",
           "engine_options", "load_directer", "load_in_turn", "quiet_transformers", "run_dtype", "sampling_settings"]


DTYPES = click.Choice(["float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "auto"], case_sensitive=False)
# The engine's packed forwards run inside the model's eager or sdpa attention; flash and flex kernels
# cannot carry them, so they are refused here, before the model loads.
ATTENTION = click.Choice(["eager", "sdpa"], case_sensitive=False)
DTYPE_HELP = ("Weights' dtype (auto: bfloat16 on a GPU that has it, else float32; float32 in reference mode); "
              "float16 with a large alpha is upcast.")
DEVICE_HELP = "cpu, cuda, cuda:1, mps, ... (default: cuda if available, else cpu; under a launcher, each process's own)."
DEVICE_MAP_HELP = ("Spread a model too large for one device over several (accelerate, as transformers' device_map): "
                   "auto, balanced, balanced_low_0, sequential, or a JSON object of module names to devices "
                   "(instead of --device).")


def _device_map(ctx, param, value):
    """--device-map: a placement strategy, or a JSON object (module name -> device), checked before loading."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("{"):
        import json

        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not a JSON object ({exc.msg}): e.g. '{{\"model.layers.0\": 0, \"lm_head\": 1}}'")
    from ..errors import DirecterError
    from ..models.loading import check_device_map

    try:
        return check_device_map(value)
    except DirecterError as exc:
        raise click.BadParameter(str(exc)) from None


device_map_option = click.option("--device-map", "device_map", default=None, callback=_device_map, help=DEVICE_MAP_HELP)
cache_tokens_option = click.option(
    "--cache-tokens", type=click.IntRange(min=1), default=None,
    help="KV cache budget: the most tokens (prompt plus response) one sequence may hold; a longer request is "
         "refused before decoding (default: no limit, or what --cache-memory allows).")
cache_memory_option = click.option(
    "--cache-memory", type=click.FloatRange(0, 1, min_open=True), default=None,
    help="KV cache budget: the share of the memory free after loading that the cache may take "
         "(default: 0.9 on a CUDA device, no limit elsewhere).")


def check_cache_tokens(cache_tokens: int | None, max_new_tokens: int, *, what: str | None = None,
                       lower: str = "--max-new-tokens") -> None:
    """A budget that no prompt can fit under (with ``max_new_tokens`` new tokens, described as ``what``;
    the fix names ``lower``) is refused before the model loads."""
    if cache_tokens is not None and cache_tokens < max_new_tokens + 2:
        what = what or f"--max-new-tokens {max_new_tokens}"
        raise click.UsageError(f"--cache-tokens {cache_tokens} leaves no room for a prompt of 2 tokens or more and "
                               f"{what}: raise --cache-tokens or lower {lower}")


def engine_options(f=None, *, method: bool = True, max_new_tokens: int = 256, seed_option: str = "--seed"):
    """Options shared by every command that runs the engine (``method=False``: without --method;
    ``max_new_tokens``: the command's default token limit; ``seed_option``: the sampling seed's name,
    passed as ``sampling_seed``)."""
    if f is None:
        return lambda g: engine_options(g, method=method, max_new_tokens=max_new_tokens, seed_option=seed_option)
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
        click.option("--dtype", type=DTYPES, default="auto", show_default=True, help=DTYPE_HELP),
        click.option("--attn-implementation", type=ATTENTION, default=None, help="Attention implementation (default: eager in reference mode, else sdpa; flash and flex kernels cannot carry the engine's packed forwards)."),
        click.option("--system", default=None, help="System message (default: the chat template's)."),
        click.option("--ranking", "ranking_file", default=None, help="Reuse the layer ranking in this JSON file (from --save-ranking or --json)."),
        click.option("--device", default=None, help=DEVICE_HELP),
        device_map_option,
        cache_tokens_option,
        cache_memory_option,
        click.option("--temperature", type=float, default=0.0, show_default=True,
                     help="Sampling temperature (0: greedy decoding, the paper's setting). See README, Fidelity: sampling."),
        click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling: keep the most likely tokens up to this probability mass (1: off)."),
        click.option("--top-k", type=int, default=0, show_default=True, help="Sample among the k most likely tokens (0: off)."),
        click.option("--min-p", type=float, default=0.0, show_default=True, help="Drop tokens below min-p times the top probability (0: off)."),
        click.option(seed_option, "sampling_seed", type=int, default=None,
                     help="Seed of the sampling (default: a fresh one, recorded in --json output). Same seed, same tokens, whatever the batch."),
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


def sampling_settings(temperature, top_p, top_k, min_p, sampling_seed, seed_option: str = "--seed") -> dict:
    """The sampling options as SteeringConfig fields, checked (errors name the command's options)."""
    from ..methods.sampling import check_sampling

    check_sampling(temperature, top_p, top_k, min_p, sampling_seed,
                   names={"temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k", "min_p": "--min-p",
                          "seed": seed_option})
    return dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, seed=sampling_seed)


def load_directer(model, dtype, attn_implementation, device, device_map=None, announce: bool = True,
                  cache_tokens: int | None = None, cache_memory: float | None = None, **config):
    """Validate the settings, then load the model (the slow part) and wrap it."""
    SteeringConfig(**config)  # validate alpha, beta, mode, method before the (slow) model load
    from ..api import Directer  # heavy imports (torch, transformers) only once arguments are valid

    quiet_transformers()
    if announce:
        click.echo(f"directer: loading {model or 'the bundled model'} ...", err=True)
    return Directer.from_pretrained(model, dtype=dtype, attn_implementation=attn_implementation, device=device,
                                    device_map=device_map, cache_tokens=cache_tokens, cache_memory=cache_memory,
                                    **config)


def check_placement(device, device_map, processes: int = 1) -> None:
    """--device and --device-map exclude each other; a device map spreads one process over every GPU
    it sees, so it runs one process per machine (or per set of GPUs given by CUDA_VISIBLE_DEVICES)."""
    from ..processes import local_processes

    if device is not None and device_map is not None:
        raise click.UsageError("give --device or --device-map, not both (the map places every layer)")
    if device is not None:  # a device this machine lacks fails here, before the model loads
        from ..errors import DirecterError
        from ..models.loading import resolve_device

        try:
            resolve_device(device)
        except DirecterError as exc:
            raise click.UsageError(str(exc).replace("use device 'cpu'", "use --device cpu")) from None
    if device_map is not None and max(processes, local_processes()) > 1:
        raise click.UsageError("--device-map with several processes on one machine: each would spread over the same "
                               "GPUs; run one process per machine, or give each its GPUs with CUDA_VISIBLE_DEVICES")


def run_dtype(dtype: str, mode: str, device, device_map) -> str:
    """The dtype a run records: ``auto`` resolved (float32 in reference mode), so that a run directory
    made on this machine is resumed with the same weights."""
    from ..models.loading import dtype_name, load_dtype

    return dtype_name(load_dtype(dtype, mode), device=device, device_map=device_map)


def load_in_turn(state, load: dict):
    """``load_directer(**load)`` in one of several launched processes (``state``: accelerate's process
    state; None: a single process): the main process first, so that a conversion cache is written once,
    then the others, from it."""
    if state is None or state.num_processes == 1:
        return load_directer(**load)
    with state.main_process_first():
        return load_directer(**load, announce=state.is_main_process)
