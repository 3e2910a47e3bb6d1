"""``directer generate``: one prompt, or a JSONL file in batch mode."""

from __future__ import annotations

import io
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from ..config import SteeringConfig
from ..errors import DirecterError, UsageError
from ..inputs import AUTO_INSTRUCTIONS, SYSTEM_INSTRUCTIONS, asks_for, check_output_file, check_prompt, resolve_instructions
from ..methods import parse_layers, parse_method
from ..models.locate import check_model_source
from ..progress import progress_bar
from ..results import Ranking
from ..processes import launched, process_device, process_state
from .options import check_cache_tokens, check_placement, engine_options, load_in_turn, sampling_settings

__all__ = ["compare_header", "generate"]

@click.command()
@click.argument("prompt", required=False)
@click.option("--instruction", "-i", "instructions", multiple=True, help="Instruction text to steer (repeatable). Steered in place if it occurs in the prompt, else appended after a blank line. 'system': the system message (--system or the chat's), as a whole. 'auto': detect the constraint sentences of the prompt.")
@click.option("--strict-instructions", is_flag=True,
              help="Refuse an instruction that is not in the prompt (case and spacing ignored) instead of appending it.")
@click.option("--occurrence", type=int, default=0, show_default=True, help="Which occurrence of an instruction repeated in the prompt to steer (0 = first, -1 = last).")
@engine_options
@click.option("--compare", is_flag=True, help="Also print the unsteered response (--method none).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON (text, token ids, spans, ranking, stats, trace).")
@click.option("--save-ranking", default=None, help="Write the layer ranking of the (first) prompt to this JSON file.")
@click.option("--html", "html_file", default=None, help="Write a per-token steering view (self-contained HTML page) to this file.")
@click.option("--input", "input_file", default=None, help="Batch mode: JSONL of {id, prompt, instructions | instruction[, system]}.")
@click.option("--output", "output_file", default=None, help="Batch mode: JSONL to write, one record per prompt (default: stdout).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Prompts decoded together in batch mode.")
def generate(prompt, instructions, strict_instructions, occurrence, model, alpha, beta, mode, method, layers, plausibility_filter,
             max_new_tokens, dtype, attn_implementation, system, ranking_file, device, device_map, cache_tokens, cache_memory, compare, as_json, save_ranking,
             html_file, input_file, output_file, batch_size, temperature, top_p, top_k, min_p, sampling_seed) -> None:
    """Generate a response to PROMPT with the instructions steered.

    \b
    Example:
      directer generate "Write a haiku about autumn." --instruction "Do not use any commas." --compare
      directer generate "Write a haiku about autumn." -i "Do not use any commas." --temperature 0.7 --top-p 0.9 --seed 1
    """
    if (prompt is None) == (input_file is None):
        raise UsageError("give either a PROMPT argument or --input FILE (batch mode), not both or neither")
    if input_file is None and output_file is not None:
        raise UsageError("--output needs --input (batch mode); for one prompt use --json")
    if input_file is not None and html_file is not None:
        raise UsageError("--html shows one prompt: use it without --input")
    if input_file is None and launched():
        raise UsageError("one PROMPT is decoded by one process: run it without a launcher, or give --input FILE "
                         "to share a batch among the launched processes")
    check_placement(device, device_map)
    check_cache_tokens(cache_tokens, max_new_tokens)
    settings = dict(alpha=alpha, beta=beta, mode=mode, method=method, layers=parse_layers(layers),
                    plausibility_filter=plausibility_filter, max_new_tokens=max_new_tokens,
                    **sampling_settings(temperature, top_p, top_k, min_p, sampling_seed))
    SteeringConfig(**settings)
    if temperature > 0 and sampling_seed is None:  # one seed for the call (--compare samples both with it)
        from ..methods.sampling import fresh_seed

        settings["seed"] = fresh_seed()
        click.echo(f"directer: sampling with --seed {settings['seed']} (pass it to get the same tokens again)", err=True)
    records = _read_jsonl(input_file) if input_file else None
    # Everything else that needs no model is checked before the (slow) load too.
    if records is None:
        resolved, occurrence = resolve_instructions(prompt, list(instructions), method=method, occurrence=occurrence)
        if resolved or not asks_for(instructions, AUTO_INSTRUCTIONS):  # "auto" that found nothing stays: the result notes it
            instructions = resolved
            check_prompt(prompt, instructions, system, append_missing=not strict_instructions)
    else:
        for line_no, rec in records:
            with _about_record(line_no, rec):
                instr, _ = resolve_instructions(rec["prompt"], _record_instructions(rec, list(instructions)),
                                                method=method)
                check_prompt(rec["prompt"], instr, rec.get("system", system), append_missing=not strict_instructions)
    for path, option in ((output_file, "--output"), (html_file, "--html"), (save_ranking, "--save-ranking")):
        check_output_file(path, option)
    if ranking_file is not None:
        Ranking.load(ranking_file)  # exists and is a ranking; whether it fits the model is checked after loading
    check_model_source(model)  # a path that does not exist, an unreachable Hub
    state = process_state(device) if launched() else None
    directer = load_in_turn(state, dict(model=model, dtype=dtype, attn_implementation=attn_implementation,
                                        device=process_device(state, device), device_map=device_map,
                                        cache_tokens=cache_tokens, cache_memory=cache_memory, **settings))
    if records is None:
        _generate_one(directer, prompt, list(instructions), system, ranking_file, compare, as_json, save_ranking,
                      occurrence, html_file, not strict_instructions)
    else:
        _generate_batch(directer, records, list(instructions), system, ranking_file, compare, output_file, batch_size,
                        occurrence, not strict_instructions, state=state)


def _generate_one(directer, prompt, instructions, system, ranking_file, compare, as_json, save_ranking,
                  occurrence=0, html_file=None, append_missing=True, notes=True) -> None:
    result = directer.generate(prompt, instructions, system=system, ranking=ranking_file, occurrence=occurrence,
                               append_missing=append_missing)
    if notes:
        _note_instructions(instructions, result)
    plain = directer.generate(prompt, instructions, system=system, occurrence=occurrence, method="none",
                              append_missing=append_missing) if compare else None
    if save_ranking and result.ranking is not None:
        Ranking(result.ranking, result.ranking_scores or [], result.mode, result.model).save(save_ranking)
    if html_file:
        from ..view.html import render_html

        Path(html_file).write_text(render_html(result, directer.tokenizer, unsteered=plain), encoding="utf-8")
        click.echo(f"directer: wrote the steering view to {html_file}", err=True)
    if as_json:
        record = result.to_dict()
        if plain is not None:
            record["unsteered"] = plain.to_dict()
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    if plain is None:
        click.echo(result.text)
    else:
        click.echo(f"=== {compare_header(directer.config)} ===\n{result.text}\n")
        click.echo(f"=== UNSTEERED ===\n{plain.text}")
    s = result.stats
    click.echo(
        f"directer: {s.steps} tokens in {s.seconds:.2f}s; gate skips {s.gate_skips}, trials {s.trials}, "
        f"accepted {dict(sorted(s.accepted.items(), reverse=True))}, raw fallbacks {s.fallbacks}",
        err=True,
    )


def _note_instructions(given: list[str], result) -> None:
    """Say when an instruction was appended, or found in words that differ in case or spacing, and what
    the result notes (e.g. that automatic spans found nothing to steer)."""
    for note in result.notes:
        click.echo(f"directer: note: {note}", err=True)
    for instr in result.appended_instructions:
        click.echo(f"directer: note: instruction {instr!r} is not in the prompt: appended after a blank line "
                   "(--strict-instructions makes this an error)", err=True)
    if asks_for(given, SYSTEM_INSTRUCTIONS):  # the system message's own text: nothing was looked for
        return
    for asked, found in zip(given, result.instructions):
        if asked != found and found not in result.appended_instructions:
            click.echo(f"directer: note: instruction {asked!r} found in the prompt as {found!r} (case and spacing "
                       "ignored); steering the prompt's words", err=True)


def compare_header(config: SteeringConfig) -> str:
    """The title of the steered text in ``--compare``: the method and the run-wide settings its resolved
    policy takes (the run's alpha only where it scales keys with it, beta only where Eq. 2 is checked)."""
    from ..methods import Directer as DirecterPolicy

    policy = config.policy()
    if parse_method(config.method)[0] == "none":
        return "UNSTEERED"
    directer = isinstance(policy, DirecterPolicy)
    filtered = getattr(policy, "filter", False)
    settings = []
    if hasattr(policy, "alpha") and "alpha" not in parse_method(config.method)[1]:  # the run's alpha
        settings.append(f"alpha={policy.alpha:g}")
    if directer or filtered:
        settings.append(f"beta={policy.beta:g}")
    if filtered and "filter" not in parse_method(config.method)[1]:  # from --plausibility-filter
        settings.append("plausibility filter")
    if directer:
        settings.append(policy.mode)
    return config.method.upper() + (f" ({', '.join(settings)})" if settings else "")


def _generate_batch(directer, records, default_instructions, system, ranking_file, compare, output_file, batch_size,
                    occurrence=0, append_missing=True, state=None) -> None:
    """Decode the records and write one output line each, in input order. Under a launcher (``state``)
    each process decodes its share (``split_between_processes``) and the main process writes every
    share's lines (``gather_object``, in rank order: the input's)."""
    several = state is not None and state.num_processes > 1
    if several:
        with state.split_between_processes(list(records)) as mine:
            records = list(mine)
    prepared, ids = [], []
    for line_no, rec in records:
        with _about_record(line_no, rec):
            prepared.append(directer.prepare(rec["prompt"], _record_instructions(rec, default_instructions),
                                             system=rec.get("system", system),
                                             occurrence=rec.get("occurrence", occurrence),
                                             append_missing=append_missing))
        ids.append(rec.get("id", str(line_no)))  # a record without an id is named by its line, as a string
    appended = sum(bool(p.appended) for p in prepared)
    if appended and not several:
        click.echo(f"directer: note: {appended} of {len(prepared)} records have instructions that are not in their "
                   "prompt: appended after a blank line (see appended_instructions in the output; "
                   "--strict-instructions makes this an error)", err=True)
    out = io.StringIO() if several else open(output_file, "w", encoding="utf-8") if output_file else sys.stdout
    bar = progress_bar(len(prepared), desc=f"process {state.process_index}" if several else None)
    # batch_size prompts decode at once on the engine (a finished one is replaced by the next); output
    # lines are written in input order, a group of prompts at a time.
    group = batch_size * 8
    try:
        for start in range(0, len(prepared), group):
            chunk = prepared[start:start + group]
            results = directer.generate_prepared(chunk, batch_size=batch_size, ranking=ranking_file)
            plain = directer.generate_prepared(chunk, batch_size=batch_size, config=directer._config(None, {"method": "none"})) if compare else None
            for k, result in enumerate(results):
                record = {"id": ids[start + k], **result.to_dict()}
                if plain is not None:
                    record["unsteered"] = plain[k].to_dict()
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            bar.update(len(chunk))
    finally:
        bar.close()
        if out is not sys.stdout and not several:
            out.close()
    if several:
        from accelerate.utils import gather_object

        shares = gather_object([out.getvalue()])
        if state.is_main_process:
            if output_file:
                Path(output_file).write_text("".join(shares), encoding="utf-8")
            else:
                sys.stdout.write("".join(shares))
                sys.stdout.flush()


def _record_instructions(rec: dict[str, Any], default: list[str]) -> list[str]:
    instr = rec.get("instructions", rec.get("instruction", default))
    return [instr] if isinstance(instr, str) else instr


@contextmanager
def _about_record(line_no: int, rec: dict[str, Any]) -> Iterator[None]:
    """Name the input line (and id) in the error a record causes."""
    try:
        yield
    except DirecterError as exc:
        raise type(exc)(f"input line {line_no} (id {rec.get('id', str(line_no))!r}): {exc}") from None


def _read_jsonl(path: str) -> list[tuple[int, dict[str, Any]]]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"input file not found: {p}")
    records = []
    for line_no, line in _lines(p):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"malformed JSON on line {line_no} of {p}: {exc.msg} (one JSON object per line)") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), (str, list)):
            raise UsageError(f"line {line_no} of {p} needs a \"prompt\" field (a string or chat messages)")
        records.append((line_no, rec))
    if not records:
        raise UsageError(f"input file {p} has no records")
    return records


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    with open(p, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(f"line {i} of {p} is not UTF-8 (byte {exc.start + 1} of the line): "
                                 "save the file as UTF-8") from None
            if line.strip():
                yield i, line
