"""Benchmarks, one module each: their prompts and their scoring (``ifeval``: the pinned IFEval prompts
and reference checkers, offline)."""
