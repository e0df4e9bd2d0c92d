"""Which optional extra of llmops-ci provides a module that is missing, and how to install it."""

from __future__ import annotations

import re

# top-level modules (or dotted prefixes) -> the extra that installs them
EXTRAS = {
    "mlflow": "mlflow", "databricks": "mlflow", "sqlalchemy": "mlflow", "alembic": "mlflow",
    "azure.ai.ml": "azure", "azure.identity": "azure", "promptflow.azure": "azure",
    "agent_framework": "agents", "azure.ai.evaluation": "agents",
}
_MISSING = re.compile(r"No module named '([A-Za-z0-9_.]+)'")


def missing_extra(error: BaseException | str) -> str | None:
    """What to install when ``error`` is a missing module one of the extras provides; None otherwise."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        module: str | None = error.name
    else:
        found = _MISSING.search(str(error))
        module = found.group(1) if found else None
    if not module:
        return None
    for prefix, extra in sorted(EXTRAS.items(), key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            return (f"the Python module '{module}' is missing: it comes with llmops-ci's [{extra}] extra; install "
                    f"it with pip install \"llmops-ci[{extra}]\" (in a clone of llmops-ci: "
                    f"pip install -e \".[{extra}]\") and run again")
    return None
