"""``directer serve``: the OpenAI-compatible server on one model."""

from __future__ import annotations

import ipaddress
import logging
import sys

import click

from ..errors import UsageError
from .options import (ATTENTION, DEVICE_HELP, DTYPE_HELP, DTYPES, cache_memory_option, cache_tokens_option,
                      check_cache_tokens, check_placement, device_map_option, load_directer)

__all__ = ["serve"]


@click.command()
@click.option("--model", default=None, help="Hugging Face id, local folder or .gguf file (default: the bundled model).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface; then set --api-key).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--dtype", type=DTYPES, default="auto", show_default=True, help=DTYPE_HELP)
@click.option("--attn-implementation", type=ATTENTION, default=None, help="Attention implementation (default: sdpa).")
@click.option("--device", default=None, help=DEVICE_HELP)
@device_map_option
@cache_tokens_option
@cache_memory_option
@click.option("--api-key", envvar="DIRECTER_API_KEY", default=None, show_envvar=True,
              help="Require 'Authorization: Bearer KEY' on /v1 requests (401 otherwise).")
@click.option("--max-batch-size", type=int, default=8, show_default=True, help="Requests decoded together.")
@click.option("--max-queue", type=int, default=256, show_default=True, help="Requests queued or decoding at once; more get 503.")
@click.option("--max-tokens-limit", type=int, default=1024, show_default=True, help="Largest max_tokens a request may ask for.")
@click.option("--max-prompt-tokens", type=int, default=4096, show_default=True, help="Longest prompt accepted, in tokens.")
@click.option("--max-body-bytes", type=int, default=1 << 20, show_default=True, help="Largest request body; larger ones get 413 unread.")
@click.option("--request-timeout", type=float, default=600.0, show_default=True,
              help="Seconds a request may take; one still running then is stopped (504).")
@click.option("--default-temperature", type=float, default=1.0, show_default=True,
              help="Temperature of requests that send none (1: OpenAI's default; 0: greedy).")
@click.option("--quiet", is_flag=True, help="No access log line per request.")
def serve(model, host, port, dtype, attn_implementation, device, device_map, cache_tokens, cache_memory, api_key, max_batch_size, max_queue, max_tokens_limit,
          max_prompt_tokens, max_body_bytes, request_timeout, default_temperature, quiet) -> None:
    """Serve the model behind an OpenAI-compatible API (/v1/chat/completions, /v1/completions, streaming).

    A request steers when its body carries {"directer": {"instructions": [...], "alpha": ..., "beta": ...,
    "method": ..., "mode": ...}}; otherwise it decodes plainly. temperature, top_p, seed, n, stop,
    logprobs and the token limits are honoured; fields the server cannot honour get a 400 naming them.
    """
    from ..methods.sampling import check_sampling

    for name, value, low in (("--max-batch-size", max_batch_size, 1), ("--max-queue", max_queue, 1),
                             ("--max-tokens-limit", max_tokens_limit, 1), ("--max-prompt-tokens", max_prompt_tokens, 2),
                             ("--max-body-bytes", max_body_bytes, 1024)):
        if value < low:
            raise UsageError(f"invalid {name} {value}: it must be >= {low}")
    if not request_timeout > 0:
        raise UsageError(f"invalid --request-timeout {request_timeout:g}: it must be > 0 seconds")
    check_sampling(default_temperature, 1.0, 0, 0.0, None, names={"temperature": "--default-temperature"})
    check_placement(device, device_map)
    if api_key is not None and not api_key.strip():
        raise UsageError("--api-key is empty: give a key, or leave the option out for an open server on loopback")
    if not api_key and not _loopback(host):
        click.echo(f"directer: warning: serving on {host} without --api-key: anyone who can reach this port can "
                   "use the model (set --api-key or DIRECTER_API_KEY)", err=True)
    import uvicorn

    from ..serving.guard import ACCESS_LOG
    from ..serving.server import ServerLimits, create_app

    default_max_tokens = min(256, max_tokens_limit)
    check_cache_tokens(cache_tokens, default_max_tokens, what=f"the default max_tokens ({default_max_tokens})",
                       lower="--max-tokens-limit")
    directer = load_directer(model, dtype, attn_implementation, device, device_map=device_map, method="none",
                             cache_tokens=cache_tokens, cache_memory=cache_memory)
    budget = directer.runner.budget(max_batch_size).columns
    if budget is not None and budget < max_prompt_tokens + max_tokens_limit:
        click.echo(f"directer: the KV cache budget holds {budget} tokens per sequence, less than --max-prompt-tokens "
                   f"plus --max-tokens-limit ({max_prompt_tokens + max_tokens_limit}): longer requests get a 400",
                   err=True)
    app = create_app(directer, ServerLimits(
        max_tokens_limit=max_tokens_limit, max_prompt_tokens=max_prompt_tokens, max_batch_size=max_batch_size,
        max_tokens_default=min(256, max_tokens_limit), max_queue=max_queue, max_body_bytes=max_body_bytes,
        request_timeout=request_timeout, default_temperature=default_temperature, api_key=api_key,
        access_log=not quiet))
    if not quiet:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("directer: %(message)s"))
        ACCESS_LOG.addHandler(handler)
        ACCESS_LOG.setLevel(logging.INFO)
        ACCESS_LOG.propagate = False
    click.echo(f"directer: serving {directer.model_name} on http://{host}:{port}/v1"
               + (" (API key required)" if api_key else ""), err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
