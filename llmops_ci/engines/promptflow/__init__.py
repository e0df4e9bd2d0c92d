"""promptflow."""
