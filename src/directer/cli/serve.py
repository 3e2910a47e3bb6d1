"""``directer serve``: the OpenAI-compatible server on one model."""

from __future__ import annotations

import click

from ..errors import UsageError
from .options import ATTENTION, DEVICE_HELP, DTYPE_HELP, DTYPES, load_directer

__all__ = ["serve"]


@click.command()
@click.option("--model", default=None, help="Hugging Face id, local folder or .gguf file (default: the bundled model).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--dtype", type=DTYPES, default="float32", show_default=True, help=DTYPE_HELP)
@click.option("--attn-implementation", type=ATTENTION, default=None, help="Attention implementation (default: sdpa).")
@click.option("--device", default=None, help=DEVICE_HELP)
@click.option("--max-batch-size", type=int, default=8, show_default=True, help="Requests decoded together.")
@click.option("--max-tokens-limit", type=int, default=1024, show_default=True, help="Largest max_tokens a request may ask for.")
@click.option("--max-prompt-tokens", type=int, default=4096, show_default=True, help="Longest prompt accepted, in tokens.")
def serve(model, host, port, dtype, attn_implementation, device, max_batch_size, max_tokens_limit, max_prompt_tokens) -> None:
    """Serve the model behind an OpenAI-compatible API (/v1/chat/completions, /v1/completions, streaming).

    A request steers when its body carries {"directer": {"instructions": [...], "alpha": ..., "beta": ...,
    "method": ..., "mode": ...}}; otherwise it decodes plainly.
    """
    import uvicorn

    from ..serving.server import ServerLimits, create_app

    if max_batch_size < 1 or max_tokens_limit < 1 or max_prompt_tokens < 2:
        raise UsageError("--max-batch-size and --max-tokens-limit must be >= 1, --max-prompt-tokens >= 2")
    directer = load_directer(model, dtype, attn_implementation, device, method="none")
    app = create_app(directer, ServerLimits(max_tokens_limit=max_tokens_limit, max_prompt_tokens=max_prompt_tokens,
                                            max_batch_size=max_batch_size, max_tokens_default=min(256, max_tokens_limit)))
    click.echo(f"directer: serving {directer.model_name} on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
