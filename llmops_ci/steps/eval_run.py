"""``llmops-ci eval-run``: each flow's evaluation flows against that flow's batch run."""

from llmops_ci.execute import eval_run
from llmops_ci.steps import RunStep

STEP = RunStep("eval-run", "run each flow's evaluations against its batch run (metrics and per-line scores into the "
               "state dir)", eval_run, evaluations=True)
