"""automation package."""
