"""activate package."""
