"""Shared pytest configuration: the Klaviyo sandbox fixtures (klaviyo_sandbox, klaviyo_sandbox_factory)."""

pytest_plugins = ["klaviyo_dagster.sandbox.pytest_plugin"]
