"""``directer lm-eval``: lm-evaluation-harness's own command line, with the ``directer`` model registered."""

from __future__ import annotations

import sys

import click

from ..errors import UsageError

__all__ = ["lm_eval_command"]


@click.command(name="lm-eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                  "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_command(args: tuple[str, ...]) -> None:
    """Run lm-evaluation-harness (lm-eval 0.4.13) with the `directer` model; every argument is lm-eval's.

    \b
    Example:
      directer lm-eval --model directer --model_args method=directer,alpha=100 --batch_size 8 \\
          --tasks ifeval --apply_chat_template --limit 20 --output_path runs/lm-eval
      directer lm-eval --model directer --model_args method=none --tasks ifeval --apply_chat_template --limit 20

    Model arguments: pretrained (default: the bundled model), method, alpha, beta, mode, layers,
    instructions (auto or field:NAME), dtype, max_gen_toks (lm-eval's --batch_size and --device apply). Log-likelihood tasks
    are scored by the raw model. Needs the extra: pip install 'directer[lm-eval]'.
    """
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise UsageError("lm-evaluation-harness is not installed: pip install 'directer[lm-eval]'") from None
    # lm-eval's IFEval checkers look for NLTK's Punkt model (and would download it): serve ours offline.
    from ..evaluation.tasks.ifeval import install_offline_punkt
    from ..integrations import lm_harness  # noqa: F401 - registers the `directer` model

    install_offline_punkt()
    sys.argv = ["lm-eval", *args]
    cli_evaluate()
