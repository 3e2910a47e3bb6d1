"""The ``directer`` command group and its entry point: one-line errors, never a traceback."""

from __future__ import annotations

import sys
import warnings

import click

from ..errors import DirecterError
from ..processes import launched, rank
from .evaluate import eval_command, profile_heads_command, report
from .demo import demo
from .generate import generate
from .harness import lm_eval_command
from .serve import serve

__all__ = ["cli", "main"]


def _fail(message: str, code: int) -> None:
    # One of several launched processes says which (the same error from each would otherwise read as one).
    try:
        who = f"directer [process {rank()}]" if launched() else "directer"
    except DirecterError:  # a malformed launcher variable: the message says so
        who = "directer"
    click.echo(f"{who}: error: {message}", err=True)
    sys.exit(code)


def _warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"directer: warning: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="directer")
def cli() -> None:
    """DIRECTER: steer a causal LM toward the instructions in its prompt (dynamic rejection steering)."""


for _command in (generate, demo, eval_command, profile_heads_command, report, serve, lm_eval_command):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit code 2 for usage errors and 1 for the others."""
    warnings.showwarning = _warning
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # The arguments travel with the context: --workers starts the same command again under a launcher.
        cli.main(args=args, prog_name="directer", standalone_mode=False, obj={"argv": args})
    except click.exceptions.Abort:
        _fail(_interrupted(args), 130)
    except click.ClickException as exc:
        _fail(exc.format_message(), 2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except DirecterError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail(_interrupted(args), 130)


def _interrupted(args: list[str]) -> str:
    """What Ctrl-C leaves: commands that keep finished work say that the same command resumes."""
    if args and args[0] in ("eval", "profile-heads"):
        return "interrupted: finished records are kept, rerun the same command to resume"
    return "interrupted"
