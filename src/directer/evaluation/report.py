"""`directer report DIR`: a self-contained HTML report (and Markdown) of an evaluation run."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Sequence

from ..errors import UsageError
from .runs import CONFIG_FILE, saved_config, score_run, summarize_run
from .tasks.registry import load_task
from .summary import METRICS, MethodSummary, breakdown_table, markdown_table

__all__ = ["LABELS", "wilson", "write_report"]

LABELS = {"prompt_strict": "prompt strict", "prompt_loose": "prompt loose", "inst_strict": "inst. strict",
          "inst_loose": "inst. loose"}


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion."""
    if n == 0:
        return 0.0, 0.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # The interval contains p; clamping to it removes rounding (0/27 gave lo = 7e-18 > p, which
    # matplotlib refuses as a negative error bar).
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def _figures(summaries: Sequence[MethodSummary]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}

    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(summaries)
    for k, s in enumerate(summaries):
        vals = [getattr(s, m) for m in METRICS]
        xs = [i + (k - (len(summaries) - 1) / 2) * width for i in range(len(METRICS))]
        ax.bar(xs, [100 * v for v in vals], width, label=s.method)
        # Intervals on the prompt-level bars only: instructions of one prompt are not independent draws,
        # so an instruction-level bar gets no cap rather than a zero-width one.
        prompt_level = [i for i, m in enumerate(METRICS) if m.startswith("prompt")]
        bounds = [wilson(vals[i], s.n) for i in prompt_level]
        ax.errorbar([xs[i] for i in prompt_level], [100 * vals[i] for i in prompt_level], fmt="none", ecolor="black",
                    yerr=[[100 * (vals[i] - lo) for i, (lo, _) in zip(prompt_level, bounds)],
                          [100 * (hi - vals[i]) for i, (_, hi) in zip(prompt_level, bounds)]], capsize=3)
    ax.set_xticks(range(len(METRICS)), [LABELS[m] for m in METRICS])
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy (prompt-level bars: 95% Wilson intervals)")
    _legend_outside(ax)
    figs["accuracy"] = _png(fig)

    cats = sorted({c for s in summaries for c in s.categories})
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for k, s in enumerate(summaries):
        vals = [s.categories.get(c, [0, 0, 0]) for c in cats]
        lo_hi = [wilson(v[0], int(v[2])) for v in vals]
        xs = [i + (k - (len(summaries) - 1) / 2) * width for i in range(len(cats))]
        ax.bar(xs, [100 * v[0] for v in vals], width, label=s.method,
               yerr=[[100 * (v[0] - lh[0]) for v, lh in zip(vals, lo_hi)], [100 * (lh[1] - v[0]) for v, lh in zip(vals, lo_hi)]],
               capsize=2)
    ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
    ax.set_ylabel("instruction-level strict (%)")
    ax.set_title("Accuracy per instruction category (95% Wilson intervals)")
    _legend_outside(ax)
    figs["categories"] = _png(fig)

    steered = [s for s in summaries if s.method.split(":")[0] != "none"]  # none has no steering to show
    if not steered:
        return figs
    names = [s.method for s in steered]
    width = 0.8 / len(steered)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    sizes = sorted({int(k) for s in steered for k in s.accepted}, reverse=True)
    for k, s in enumerate(steered):
        total = sum(s.accepted.values()) or 1
        xs = [i + (k - (len(steered) - 1) / 2) * width for i in range(len(sizes))]
        a1.bar(xs, [100 * s.accepted.get(str(z), 0) / total for z in sizes], width, label=s.method)
    a1.set_xticks(range(len(sizes)), [str(z) for z in sizes])
    a1.set_xlabel("accepted layer-set size")
    a1.set_ylabel("% of steered tokens")
    a1.set_title("Accepted layer-set sizes")
    a1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    xs = range(len(names))
    a2.bar([x - 0.2 for x in xs], [100 * s.gate_skip for s in steered], 0.4, label="gate skip")
    a2.bar([x + 0.2 for x in xs], [100 * s.fallback for s in steered], 0.4, label="raw fallback")
    a2.set_xticks(list(xs), names, rotation=20, ha="right", fontsize=8)
    a2.set_ylabel("% of steps")
    a2.set_title("Gate skips and raw fallbacks")
    a2.legend(fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)
    fig.tight_layout()
    figs["steering"] = _png(fig)
    return figs


def _legend_outside(ax) -> None:
    """The legend beside the plot, where it cannot hide a bar."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _disagreements(scored: dict, methods: Sequence[str], limit: int = 4) -> list[dict]:
    """Prompts where a method and `none` get different prompt-level strict verdicts."""
    if "none" not in scored:
        return []
    out = []
    a, sa = scored["none"]
    for m in methods:
        if m == "none":
            continue
        b, sb = scored[m]
        found = 0
        for ra, rb, xa, xb in zip(a, b, sa, sb):
            if found >= limit:
                break
            if xa.prompt_strict != xb.prompt_strict:
                out.append({"method": m, "prompt": ra["prompt"], "none": ra["response"], "other": rb["response"],
                            "none_ok": xa.prompt_strict, "other_ok": xb.prompt_strict, "spans": rb["spans"]})
                found += 1
    return out


def write_report(run_dir: Path, data: str | None = None) -> tuple[Path, Path]:
    """Write the report of a run directory; ``data``: where the run's data file is now (gsm8k-format and
    task-file runs whose file has moved; its sha256 must still be the run's)."""
    config = saved_config(run_dir)
    if config is None:
        raise UsageError(f"{run_dir} is not an evaluation run directory (no {CONFIG_FILE}): run `directer eval` first")
    keys = config.selection.get("keys") or []
    args = dict(config.task_args)
    if data is not None:
        if config.task == "ifeval":
            raise UsageError("--data does not apply to an IFEval run (its prompts are pinned)")
        args["data" if config.task == "gsm8k-format" else "file"] = data
    task = load_task(config.task, args)
    if task.sha256 != config.dataset_sha256:
        raise UsageError(f"the data of {run_dir} changed since the run (sha256 {task.sha256[:12]}..., the run used "
                         f"{config.dataset_sha256[:12]}...): restore it or evaluate again in a new directory")
    by_key = {p.key: p for p in task.items}
    # The run's own prompt order: the bootstrap resamples by position, so order matters for its interval.
    prompts = [by_key[k] for k in keys] if keys else list(by_key.values())
    scored = score_run(run_dir, prompts, config.methods)  # scored once: the summary and the pairs share it
    summaries = summarize_run(run_dir, prompts, config.methods, scored)
    figs = _figures(summaries)
    pairs = _disagreements(scored, config.methods)
    table, cats = markdown_table(summaries), breakdown_table(summaries)
    title = f"{task.title} report"
    setting = (f"model {config.model}, {len(prompts)} {task.label}, alpha {config.alpha:g}, beta {config.beta:g}, "
               f"mode {config.mode}, max {config.max_new_tokens} new tokens, spans {config.spans}, "
               f"directer {config.package_version}")
    if config.sampling:
        sp = config.sampling
        setting += (f", sampled: temperature {sp['temperature']:g}, top_p {sp['top_p']:g}, top_k {sp['top_k']}, "
                    f"min_p {sp['min_p']:g}, seed {sp['seed']}")
    else:
        setting += ", greedy"

    for name, data in figs.items():
        (run_dir / f"report-{name}.png").write_bytes(data)
    md = [f"# {title}\n\n{setting}\n", table, "", cats, ""]
    md += [f"![{n}](report-{n}.png)\n" for n in figs]
    if pairs:
        md.append("## Where the methods disagree (prompt-level strict)\n")
    for d in pairs:
        md.append(f"**{d['method']}** {'passes' if d['other_ok'] else 'fails'}, **none** "
                  f"{'passes' if d['none_ok'] else 'fails'}\n\n> {d['prompt'][:600]}\n\n"
                  f"none:\n\n```\n{d['none'][:800]}\n```\n\n{d['method']}:\n\n```\n{d['other'][:800]}\n```\n")
    md_path = run_dir / "report.md"
    md_path.write_text("\n".join(md))

    body = [f"<h1>{html.escape(title)}</h1><p>{html.escape(setting)}</p>", _md_table_html(table), _md_table_html(cats)]
    body += [f'<img alt="{n}" src="data:image/png;base64,{base64.b64encode(d).decode()}">' for n, d in figs.items()]
    if pairs:
        body.append("<h2>Where the methods disagree (prompt-level strict)</h2>")
    for d in pairs:
        body.append(
            f"<div class=pair><p class=prompt>{html.escape(d['prompt'])}</p><div class=cols>"
            f"<div><h3>none — {'pass' if d['none_ok'] else 'fail'}</h3><pre>{html.escape(d['none'])}</pre></div>"
            f"<div><h3>{html.escape(d['method'])} — {'pass' if d['other_ok'] else 'fail'}</h3>"
            f"<pre>{html.escape(d['other'])}</pre></div></div></div>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1f2430}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ddd;padding:4px 6px}"
             "img{max-width:100%;display:block;margin:1em 0}.cols{display:grid;grid-template-columns:1fr 1fr;gap:1em}"
             "pre{white-space:pre-wrap;background:#f6f7fb;padding:.6em;font-size:12px}.prompt{font-style:italic}"
             ".pair{border-top:1px solid #ddd;margin-top:1em}")
    html_path = run_dir / "report.html"
    html_path.write_text(f"<!DOCTYPE html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
                         f"<style>{style}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")
    return html_path, md_path


def _md_table_html(md: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in md.splitlines() if r.strip() and not r.startswith("|---")]
    head, *rest = rows
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rest]
    return "".join(out) + "</table>"
