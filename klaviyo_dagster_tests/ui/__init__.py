"""End-to-end tests of the Dagster UI (GraphQL through the webserver, and a real browser)."""
