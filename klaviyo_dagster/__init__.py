"""klaviyo-dagster: Dagster assets that ingest Klaviyo into a warehouse and activate warehouse tables back into Klaviyo."""

__version__ = "0.1.0"
