"""Bridges to other tools (imported only on request): ``lm_harness``, the lm-evaluation-harness model
``directer``."""
