"""Tests of the bundled Klaviyo sandbox."""
