"""llmops-ci: lint, run, evaluate, gate, register and deploy prompt flow apps from CI."""

__version__ = "0.1.0"
