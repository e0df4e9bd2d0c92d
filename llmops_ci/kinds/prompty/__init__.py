"""prompty."""
