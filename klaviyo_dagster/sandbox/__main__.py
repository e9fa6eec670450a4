"""`python -m klaviyo_dagster.sandbox [--port 8765 --seed 42 --scale small --rate-limits off]`."""

from klaviyo_dagster.sandbox.serve import main

raise SystemExit(main())
