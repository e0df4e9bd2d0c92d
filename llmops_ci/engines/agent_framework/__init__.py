"""agent_framework."""
