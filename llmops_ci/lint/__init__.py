"""Static checks of an llmops project: no LLM call, no executor, no promptflow or azure import."""
