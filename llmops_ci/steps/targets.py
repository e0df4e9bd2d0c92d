"""Every name ``--backend`` accepts: a target for runs, for releases, or both."""

from __future__ import annotations

from llmops_ci.releases import RELEASES
from llmops_ci.runs import BACKENDS


def backend_names() -> list[str]:
    return list(dict.fromkeys([*BACKENDS, *RELEASES]))
