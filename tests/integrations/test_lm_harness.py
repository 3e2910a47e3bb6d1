"""The lm-evaluation-harness model ``directer``: lm-eval's IFEval scores our responses as `directer eval`
does, stop sequences, spans, raw log-likelihoods; offline, with a local task and data file."""

from __future__ import annotations

import json
import math

import pytest
import torch

from directer.errors import UsageError
from directer.evaluation.tasks.ifeval import install_offline_punkt, load_ifeval

from cli_runner import directer

install_offline_punkt()  # before lm-eval's IFEval utilities look for Punkt (they would download it)

from lm_eval.api.instance import Instance  # noqa: E402
from directer.integrations.lm_harness import DirecterLM, request_spans  # noqa: E402

pytestmark = pytest.mark.slow

LIMIT, TOKENS = 3, 16


def write_task(folder, prompts, tokens: int) -> None:
    """An lm-eval task like its own `ifeval` (same processing and metrics), reading a local file."""
    with open(folder / "prompts.jsonl", "w") as f:
        for p in prompts:
            f.write(json.dumps({"key": p.key, "prompt": p.prompt, "instruction_id_list": p.instruction_id_list,
                                "kwargs": p.kwargs}) + "\n")
    (folder / "utils.py").write_text("from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results\n")
    metrics = "".join(f"  - metric: {m}\n    aggregation: {agg}\n    higher_is_better: true\n" for m, agg in [
        ("prompt_level_strict_acc", "mean"), ("inst_level_strict_acc", "!function utils.agg_inst_level_acc"),
        ("prompt_level_loose_acc", "mean"), ("inst_level_loose_acc", "!function utils.agg_inst_level_acc")])
    (folder / "ifeval_local.yaml").write_text(
        "task: ifeval_local\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'prompts.jsonl'}\noutput_type: generate_until\ntest_split: test\n"
        "doc_to_text: prompt\ndoc_to_target: 0\ngeneration_kwargs:\n  until: []\n  do_sample: false\n"
        f"  temperature: 0.0\n  max_gen_toks: {tokens}\nprocess_results: !function utils.process_results\n"
        f"metric_list:\n{metrics}")


@pytest.fixture(scope="module")
def lm():
    return DirecterLM(batch_size=4, max_gen_toks=TOKENS)


def test_lm_evals_ifeval_scores_our_responses_as_directer_eval_does(lm, tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_task(tmp_path, load_ifeval(limit=LIMIT), TOKENS)
    res = lm_eval.simple_evaluate(model=lm, tasks=["ifeval_local"], task_manager=TaskManager(include_path=str(tmp_path)),
                                  apply_chat_template=True, log_samples=True)
    theirs = {s["doc"]["key"]: s["resps"][0][0] for s in res["samples"]["ifeval_local"]}

    run = tmp_path / "ours"
    proc = directer("eval", "ifeval", "--method", "directer", "--limit", str(LIMIT), "--max-new-tokens", str(TOKENS),
                    "--output-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    ours = {json.loads(line)["key"]: json.loads(line)["response"]
            for line in (run / "responses-directer.jsonl").read_text().splitlines()}
    assert theirs == ours  # the same prompts, spans and decoding: the same responses
    summary = json.loads((run / "summary.json").read_text())[0]
    metrics = res["results"]["ifeval_local"]
    for their_name, our_name in [("prompt_level_strict_acc", "prompt_strict"), ("prompt_level_loose_acc", "prompt_loose"),
                                 ("inst_level_strict_acc", "inst_strict"), ("inst_level_loose_acc", "inst_loose")]:
        assert metrics[f"{their_name},none"] == pytest.approx(summary[our_name]), their_name


def test_stop_sequences_end_the_row_and_are_cut(lm):
    doc = {"prompt": "List the numbers from one to ten in words, with commas between them."}  # a comma comes early
    free = lm.generate_until([Instance("generate_until", doc, (doc["prompt"], {"until": [], "max_gen_toks": 16}), 0)])[0]
    assert "," in free
    cut = lm.generate_until([Instance("generate_until", doc, (doc["prompt"], {"until": [","], "max_gen_toks": 16}), 0)])[0]
    assert "," not in cut and free.startswith(cut)


def test_spans_of_a_request():
    text = "Write a poem. Do not use any commas."
    assert [text[a:b] for a, b in request_spans({}, text, "auto")] == ["Do not use any commas."]
    doc = {"constraint": "Do not use any commas."}
    assert [text[a:b] for a, b in request_spans(doc, text, "field:constraint")] == ["Do not use any commas."]
    with pytest.raises(UsageError, match="no field 'rule'"):
        request_spans(doc, text, "field:rule")
    with pytest.raises(UsageError, match="is not in the request's text"):
        request_spans({"constraint": "Rhyme."}, text, "field:constraint")


def test_loglikelihood_is_the_raw_models(lm):
    context, continuation = "The capital of France is", " Paris"
    [(logprob, _greedy)] = lm.loglikelihood([Instance("loglikelihood", {}, (context, continuation), 0)])
    tok = lm.directer.tokenizer
    ctx, cont = tok(context)["input_ids"], tok(context + continuation)["input_ids"][len(tok(context)["input_ids"]):]
    with torch.no_grad():
        logits = lm.directer.model(torch.tensor([ctx + cont])).logits[0].float().log_softmax(-1)
    expected = sum(logits[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))
    assert math.isfinite(logprob) and logprob == pytest.approx(expected, abs=1e-3)


def test_bad_model_arguments_fail_before_loading():
    with pytest.raises(UsageError, match="instructions=all"):
        DirecterLM(instructions="all")
    with pytest.raises(UsageError, match="--batch_size auto"):
        DirecterLM(batch_size="auto")
    with pytest.raises(UsageError, match="alpha"):
        DirecterLM(alpha=-1)


def test_the_command_line_route_runs_the_example_task_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["lm-eval", "--model", "directer", "--tasks", "directer_instructions", "--include_path", "examples/lm-eval",
            "--apply_chat_template", "--limit", "2", "--gen_kwargs", "max_gen_toks=8", "--batch_size", "2"]
    proc = directer(*args, "--model_args", "method=directer", "--output_path", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "directer_instructions" in proc.stdout and "prompt_level_strict_acc" in proc.stdout
    results = list((tmp_path / "out").rglob("results_*.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["results"]["directer_instructions"]["alias"]
    bad = directer(*args, "--model_args", "instructions=all")
    assert bad.returncode == 2 and "instructions=all: use auto or field:NAME" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_two_launched_processes_share_the_requests_and_give_one_process_samples(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["lm-eval", "--model", "directer", "--model_args", "method=directer", "--tasks", "directer_instructions",
            "--include_path", "examples/lm-eval", "--apply_chat_template", "--limit", "4", "--gen_kwargs",
            "max_gen_toks=8", "--batch_size", "2", "--log_samples"]
    alone = directer(*args, "--output_path", str(tmp_path / "one"))
    assert alone.returncode == 0, alone.stderr[-2000:]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "directer.cli", *args, "--output_path", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "on rank 1" in two.stderr  # lm-eval built the second process's share of the requests

    def samples(folder):
        (path,) = folder.rglob("samples_*.jsonl")
        return sorted((r["doc_id"], r["resps"]) for r in map(json.loads, path.read_text().splitlines()))

    assert samples(tmp_path / "two") == samples(tmp_path / "one") and len(samples(tmp_path / "one")) == 4
