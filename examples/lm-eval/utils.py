"""The example task scores like lm-eval's own `ifeval` task: its processing and aggregation, reused."""

from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results  # noqa: F401
