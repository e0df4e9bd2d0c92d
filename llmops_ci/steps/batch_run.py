"""``llmops-ci batch-run``: each selected flow over its data set, on the real prompt flow executor."""

from llmops_ci.execute import batch_run
from llmops_ci.steps import RunStep

STEP = RunStep("batch-run", "run each flow over its data set (lines, failures, latency, tokens into the state dir)",
               batch_run)
