"""The command line, end to end on the bundled model, and its handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cli_runner

HAIKU = "Write a haiku about autumn."
NO_COMMAS = "Do not use any commas."


def directer(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return cli_runner.directer(*args, timeout=timeout, warnings="ignore::DeprecationWarning")


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("directer: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]


# -- errors caught before the model loads (fast) --------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--alpha", "0"], ["alpha"]),
    (["--alpha", "-3"], ["alpha"]),
    (["--beta", "-0.1"], ["beta"]),
    (["--mode", "fast"], ["mode", "paper"]),
    (["--method", "pasta2"], ["method", "directer"]),
    (["--method", "pasta:alpha=2"], ["pasta", "no parameter", "alpha_p"]),
    (["--method", "static:alpha=-1"], ["static alpha"]),
    (["--method", "pasta:profile=/nonexistent.json"], ["head profile", "not found"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens"]),
    (["--temperature", "-1"], ["--temperature", ">= 0"]),
    (["--top-p", "0"], ["--top-p", "(0, 1]"]),
    (["--top-k", "-2"], ["--top-k"]),
    (["--min-p", "2"], ["--min-p"]),
    (["--mode", "reference", "--temperature", "0.7"], ["reference", "temperature"]),
    (["--attn-implementation", "flash_attention_2"], ["--attn-implementation", "sdpa"]),
])
def test_invalid_options_are_usage_errors(args, words):
    assert_one_line_error(directer("generate", HAIKU, "-i", NO_COMMAS, *args), 2, *words)


def test_missing_and_malformed_input_files(tmp_path):
    assert_one_line_error(directer("generate", "--input", str(tmp_path / "nope.jsonl")), 2, "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "hi"}\n{"id": 2, "prompt": \n')
    assert_one_line_error(directer("generate", "--input", str(bad)), 2, "line 2")
    noprompt = tmp_path / "noprompt.jsonl"
    noprompt.write_text('{"id": 1, "text": "hi"}\n')
    assert_one_line_error(directer("generate", "--input", str(noprompt)), 2, "prompt")


def assert_refused_before_loading(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert_one_line_error(proc, code, *words)
    assert "loading" not in proc.stderr, proc.stderr  # the model was never loaded


@pytest.mark.parametrize("args, words", [
    (["", "-i", NO_COMMAS], ["empty prompt"]),
    ([HAIKU, "-i", "   "], ["empty instruction"]),
    ([HAIKU], ["no instruction"]),
    ([HAIKU, "-i", NO_COMMAS, "--ranking", "no-such-ranking.json"], ["ranking file not found"]),
    ([HAIKU, "-i", NO_COMMAS, "--dtype", "fp8"], ["--dtype", "float32"]),
    ([HAIKU, "-i", NO_COMMAS, "--attn-implementation", "fast"], ["--attn-implementation", "sdpa"]),
    ([HAIKU, "-i", NO_COMMAS, "--html", "/no/such/folder/view.html"], ["--html", "does not exist"]),
    ([HAIKU, "-i", NO_COMMAS, "--save-ranking", "/no/such/folder/r.json"], ["--save-ranking", "does not exist"]),
    ([HAIKU, "-i", NO_COMMAS, "--model", "./no/such/model"], ["model not found"]),
    ([HAIKU, "-i", NO_COMMAS, "--cache-tokens", "20", "--max-new-tokens", "30"], ["--cache-tokens 20", "--max-new-tokens"]),
    ([HAIKU, "-i", NO_COMMAS, "--cache-tokens", "0"], ["--cache-tokens"]),
    ([HAIKU, "-i", "system"], ["steer the system message", "--system TEXT"]),
    ([HAIKU, "-i", NO_COMMAS, "--cache-memory", "1.5"], ["--cache-memory"]),
])
def test_what_needs_no_model_is_checked_before_loading(args, words):
    code = 1 if "--model" in args else 2
    assert_refused_before_loading(directer("generate", *args), code, *words)


@pytest.mark.parametrize("size", ["0", "-3"])
def test_batch_size_below_one_is_a_usage_error(tmp_path, size):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"prompt": HAIKU, "instruction": NO_COMMAS}) + "\n")
    proc = directer("generate", "--input", str(inp), "--output", str(out), "--batch-size", size)
    assert_refused_before_loading(proc, 2, "--batch-size", "x>=1")
    assert not out.exists()  # no empty output file: nothing was (or seemed to be) done
    assert_refused_before_loading(directer("eval", "ifeval", "--batch-size", size), 2, "--batch-size")


def test_batch_input_is_checked_before_loading(tmp_path):
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps({"prompt": "ok"}).encode() + b"\n" + '{"prompt": "café"}\n'.encode("latin-1"))
    assert_refused_before_loading(directer("generate", "--input", str(latin1), "-i", "x"), 2, "line 2", "not UTF-8")
    empty = tmp_path / "empty-instruction.jsonl"
    empty.write_text(json.dumps({"id": "a", "prompt": HAIKU, "instruction": NO_COMMAS}) + "\n"
                     + json.dumps({"prompt": HAIKU, "instructions": [""]}) + "\n")
    assert_refused_before_loading(directer("generate", "--input", str(empty)), 2, "line 2", "id '2'", "empty instruction")
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({"prompt": HAIKU, "instruction": NO_COMMAS}) + "\n")
    proc = directer("generate", "--input", str(ok), "--output", str(tmp_path / "missing" / "out.jsonl"))
    assert_refused_before_loading(proc, 2, "--output", "does not exist")


def test_help_and_argument_errors_import_no_torch():
    probe = ("import sys, directer, directer.cli.main; from directer.cli.main import cli\n"
             "from click.testing import CliRunner\n"
             "for args in (['--help'], ['generate', '--help'], ['eval', '--help'], ['generate', 'x']):\n"
             "    CliRunner().invoke(cli, args)\n"
             "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_prompt_and_input_are_exclusive(tmp_path):
    assert_one_line_error(directer("generate"), 2, "PROMPT")


def test_unknown_model_path():
    assert_one_line_error(directer("generate", HAIKU, "-i", NO_COMMAS, "--model", "./no/such/model"), 1, "not found")


def test_unsupported_architecture(tmp_path):
    from transformers import AutoModelForSeq2SeqLM, T5Config

    folder = tmp_path / "t5"
    cfg = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    AutoModelForSeq2SeqLM.from_config(cfg).save_pretrained(folder)
    assert_one_line_error(directer("generate", HAIKU, "-i", NO_COMMAS, "--model", str(folder)), 1, "t5")


# -- the bundled model (slow) ---------------------------------------------------------------------------

@pytest.mark.slow
def test_generate_json_end_to_end():
    proc = directer("generate", HAIKU, "--instruction", NO_COMMAS, "--max-new-tokens", "12", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    for key in ("text", "token_ids", "prompt_token_ids", "instruction_token_spans", "method", "mode", "alpha",
                "beta", "model", "ranking", "stats", "trace"):
        assert key in r
    assert r["method"] == "directer" and r["mode"] == "paper" and r["alpha"] == 100 and r["beta"] == 0.5
    assert 1 <= len(r["token_ids"]) <= 12 and len(r["trace"]) == len(r["token_ids"])
    assert sorted(r["ranking"]) == list(range(30))
    (start, end), = r["instruction_token_spans"]
    assert NO_COMMAS.split()[-1].rstrip(".") in "".join(r["prompt"])  # the instruction was appended
    assert end - start >= 5
    s = r["stats"]
    assert s["steps"] == len(r["token_ids"]) and s["seconds"] > 0
    assert set(s) >= {"gate_skips", "trials", "accepted", "fallbacks"}
    assert all(set(t) == {"skipped", "trials", "layers"} for t in r["trace"])


@pytest.mark.slow
def test_compare_prints_both_responses_and_writes_the_html_view(tmp_path):
    page = tmp_path / "view.html"
    proc = directer("generate", HAIKU, "-i", NO_COMMAS, "--max-new-tokens", "8", "--compare", "--html", str(page))
    assert proc.returncode == 0, proc.stderr
    assert "=== DIRECTER" in proc.stdout and "=== UNSTEERED ===" in proc.stdout
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "UNSTEERED" in html.upper() and "steered" in html


@pytest.mark.slow
def test_batch_mode_matches_single_prompts(tmp_path):
    records = [
        {"id": "a", "prompt": HAIKU, "instructions": [NO_COMMAS]},
        {"id": 7, "prompt": "Name three rivers in Europe.", "instruction": "Answer in lowercase letters only."},
        {"id": "c", "prompt": [{"role": "user", "content": "List two fruits. Use exactly two words."}],
         "instructions": ["Use exactly two words."]},
        {"prompt": HAIKU, "instructions": [NO_COMMAS]},  # no id: named by its line, as a string like the others
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = directer("generate", "--input", str(inp), "--output", str(out), "--batch-size", "2", "--max-new-tokens", "6")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["a", 7, "c", "4"]
    single = json.loads(directer("generate", "Name three rivers in Europe.", "-i", "Answer in lowercase letters only.",
                                 "--max-new-tokens", "6", "--json").stdout)
    assert lines[1]["token_ids"] == single["token_ids"]
    assert lines[1]["instruction_token_spans"] == single["instruction_token_spans"]


@pytest.mark.slow
def test_ranking_file_round_trip(tmp_path):
    path = tmp_path / "ranking.json"
    first = directer("generate", HAIKU, "-i", NO_COMMAS, "--max-new-tokens", "4", "--json", "--save-ranking", str(path))
    assert first.returncode == 0, first.stderr
    saved = json.loads(path.read_text())
    again = directer("generate", HAIKU, "-i", NO_COMMAS, "--max-new-tokens", "4", "--json", "--ranking", str(path))
    assert again.returncode == 0, again.stderr
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert saved["order"] == a["ranking"] == b["ranking"]
    assert a["token_ids"] == b["token_ids"]
    assert b["stats"]["ranking_seconds"] == 0
    path.write_text("{not json")
    assert_one_line_error(directer("generate", HAIKU, "-i", NO_COMMAS, "--ranking", str(path)), 1, "corrupt")


@pytest.mark.slow
@pytest.mark.parametrize("args, code, words", [
    ([HAIKU, "-i", NO_COMMAS, "--max-new-tokens", "9000"], 2, ["context length"]),
    ([HAIKU, "-i", NO_COMMAS, "--max-new-tokens", "16", "--cache-tokens", "40"], 2,
     ["plus --max-new-tokens (16) needs", "budget holds 40 (--cache-tokens 40)"]),
    (["Do not use any commas in the reply.", "-i", "commas", "--mode", "reference"], 2, ["commas"]),
])
def test_bad_input_on_the_bundled_model(args, code, words):
    assert_one_line_error(directer("generate", *args), code, *words)


def test_auto_instructions_that_find_nothing_decode_plainly_and_say_so():
    proc = directer("generate", HAIKU, "-i", "auto", "--max-new-tokens", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["notes"] == ["no instruction found; nothing steered"] and out["method"] == "none"
    assert "directer: note: no instruction found; nothing steered" in proc.stderr


def test_the_system_message_as_the_instruction_from_the_command_line():
    proc = directer("generate", HAIKU, "-i", "system", "--system", NO_COMMAS, "--max-new-tokens", "6", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["instructions"] == [NO_COMMAS] and out["appended_instructions"] == []
    assert "note:" not in proc.stderr


def test_compare_header_names_only_the_settings_a_method_uses():
    from directer.cli.generate import compare_header
    from directer.config import SteeringConfig

    def header(method, **kw):
        return compare_header(SteeringConfig(method=method, **{"alpha": 100, "beta": 0.5, **kw}))

    assert header("directer") == "DIRECTER (alpha=100, beta=0.5, paper)"
    assert header("static") == "STATIC (alpha=100)"
    # Once showed "STATIC:ALPHA=3 (alpha=100, ...)": the run's alpha, not the one static used.
    assert header("static:alpha=3") == "STATIC:ALPHA=3"
    assert header("pasta") == "PASTA"
    assert header("pasta:filter=1") == "PASTA:FILTER=1 (beta=0.5)"
    assert header("spotlight", plausibility_filter=True, beta=0.3) == "SPOTLIGHT (beta=0.3, plausibility filter)"
    assert header("none") == "UNSTEERED"


def test_strict_instructions_refuse_a_missing_instruction_before_loading():
    proc = directer("generate", HAIKU, "-i", NO_COMMAS, "--strict-instructions")
    assert_refused_before_loading(proc, 2, "not in the prompt", "case and spacing ignored")


@pytest.mark.slow
def test_instructions_found_ignoring_case_or_appended_are_reported():
    prompt = "Write a haiku about autumn and  do not use any commas."
    found = directer("generate", prompt, "-i", NO_COMMAS, "--max-new-tokens", "4", "--json")
    assert found.returncode == 0, found.stderr
    record = json.loads(found.stdout)
    assert record["instructions"] == ["do not use any commas."] and record["appended_instructions"] == []
    assert record["prompt"].count("commas") == 1  # steered in place, not appended a second time
    assert "found in the prompt as 'do not use any commas.'" in found.stderr
    appended = directer("generate", HAIKU, "-i", NO_COMMAS, "--max-new-tokens", "4", "--json")
    assert json.loads(appended.stdout)["appended_instructions"] == [NO_COMMAS]
    assert "is not in the prompt: appended" in appended.stderr


@pytest.mark.slow
def test_the_example_input_file_runs(tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "prompts.jsonl"
    out = tmp_path / "out.jsonl"
    proc = directer("generate", "--input", str(example), "--output", str(out), "--max-new-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [json.loads(x)["id"] for x in example.read_text().splitlines()]
    assert all(r["instruction_token_spans"] for r in records)


@pytest.mark.slow
def test_sampling_from_the_command_line_is_reproducible():
    args = ("generate", HAIKU, "-i", NO_COMMAS, "--max-new-tokens", "12", "--temperature", "0.8", "--top-p", "0.95",
            "--json")
    first = directer(*args, "--seed", "5")
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert record["sampling"] == {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "min_p": 0.0, "seed": 5}
    assert json.loads(directer(*args, "--seed", "5").stdout)["token_ids"] == record["token_ids"]
    fresh = directer(*args)  # no seed: one is drawn, printed and recorded
    seed = json.loads(fresh.stdout)["sampling"]["seed"]
    assert f"--seed {seed}" in fresh.stderr
    assert json.loads(directer(*args, "--seed", str(seed)).stdout)["token_ids"] == json.loads(fresh.stdout)["token_ids"]


@pytest.mark.slow
def test_the_demo_shows_a_checked_example_and_writes_the_view(tmp_path):
    view = tmp_path / "view.html"
    proc = directer("demo", "--html", str(view))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "IFEval prompt 2143" in out and out.count("IFEval checker:") == 2
    unsteered, steered = out.split("=== UNSTEERED ===")[1].split("=== DIRECTER")
    assert "IFEval checker: FAIL" in unsteered and "IFEval checker: PASS" in steered  # live verdicts
    assert "This is one prompt" in out and "docs/results/ifeval-541" in out
    assert view.stat().st_size > 1000 and str(view) in out
