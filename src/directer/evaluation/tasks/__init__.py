"""Benchmarks, one module each (``ifeval``: the pinned IFEval prompts and reference checkers, offline;
``gsm8k_format``: GSM8K with appended format constraints; ``task_file``: a user's JSON-lines tasks), what
they share (``base``: items and scores; ``formats``: our format checkers; ``answers``: the answer
extractor and matchers; ``scoring``: one item scored) and the ``registry`` that loads them by name."""
