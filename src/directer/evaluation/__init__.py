"""Evaluation: resumable runs of several methods on the same prompts, and what is computed from them.

``runs`` holds the run directory (configuration, one responses file per method, resume) and
``workers`` the parallel runs (``--workers``); ``stats`` (paired bootstrap, McNemar), ``quality``
(perplexity, repetition, restatements), ``summary`` (the comparison table) and ``report`` (HTML and
Markdown with figures) read them; ``profiling`` scores attention heads for PASTA. Benchmarks are in
``tasks`` (IFEval, GSM8K-Format, task files), one module each, loaded by name through
``tasks.registry``.
"""
