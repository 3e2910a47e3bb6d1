"""``directer demo``: one IFEval prompt decoded live with and without steering, each response checked by
the IFEval checker, the per-token view written to a file, and the aggregate result it is one example of.

The prompt is one of the 36 of 541 where the recorded full run (README, Measured results;
``docs/results/ifeval-541``) has DIRECTER pass the checker and plain decoding fail (27 go the other
way). The responses and the verdicts printed are computed now; the aggregate figures are the recorded
run's, quoted with their source.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..inputs import check_output_file
from .generate import compare_header
from .options import load_directer

__all__ = ["demo"]

EXAMPLE_KEY = 2143  # IFEval key: expand a note into >= 5 sentences without two words
EXAMPLE_SPAN = "at least 5 sentences. Do not use the words reschedule or free."  # its automatic span
RECORDED = ("all 541 IFEval prompts, bundled SmolLM2-135M-Instruct, greedy, 512 tokens: prompt-level strict "
            "18.9 % -> 20.5 % (+1.7 [-1.3, +4.4]), instruction-level 30.3 % -> 33.6 % (+3.2 [+0.5, +5.8]); "
            "DIRECTER passes where plain decoding fails on 36 prompts, the reverse on 27")
SOURCE = "README.md, Measured results (run directory docs/results/ifeval-541)"


@click.command()
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=160, show_default=True, help="Token limit of each response.")
@click.option("--model", default=None, help="Model to demo (default: the bundled SmolLM2-135M-Instruct).")
@click.option("--html", "html_file", default="directer-demo.html", show_default=True,
              help="Where to write the per-token steering view.")
def demo(max_new_tokens, model, html_file) -> None:
    """Steer the bundled model on one IFEval prompt, check both responses, show the per-token view."""
    check_output_file(html_file, "--html")
    from ..evaluation.tasks.ifeval import load_ifeval, score_response
    from ..view.html import render_html

    prompt = next(p for p in load_ifeval() if p.key == EXAMPLE_KEY)
    directer = load_directer(model, "float32", None, None, max_new_tokens=max_new_tokens)
    click.echo(f"One example: IFEval prompt {EXAMPLE_KEY}, chosen from the recorded run's prompts where only the "
               "steered response passes the checker.\n")
    click.echo(f"Prompt:      {prompt.prompt}\nSteered:     {EXAMPLE_SPAN!r} (its span in the prompt)\n")
    steered = directer.generate(prompt.prompt, [EXAMPLE_SPAN], append_missing=False)
    plain = directer.generate(prompt.prompt, [EXAMPLE_SPAN], append_missing=False, method="none")
    for title, result in (("UNSTEERED", plain), (compare_header(directer.config), steered)):
        score = score_response(prompt, result.text)
        checks = ", ".join(f"{i} {'pass' if ok else 'FAIL'}" for i, ok in zip(score.instruction_ids, score.strict))
        click.echo(f"=== {title} ===\n{result.text}\n")
        click.echo(f"IFEval checker: {'PASS' if score.prompt_strict else 'FAIL'} ({checks})\n")
    Path(html_file).write_text(render_html(steered, directer.tokenizer, unsteered=plain), encoding="utf-8")
    s = steered.stats
    click.echo(f"What steering did: {s.steps} tokens, the gate skipped {s.gate_skips}, steered tokens accepted "
               f"{sum(s.accepted.values())}, raw fallbacks {s.fallbacks}; per token: {html_file}")
    where = "" if model is None else " (recorded on the bundled model, not this one)"
    click.echo(f"\nThis is one prompt. The aggregate{where}: {RECORDED}.\nSee {SOURCE}.")
