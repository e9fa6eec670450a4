"""`make demo`: the whole loop against the bundled sandbox, printed as it lands.

1. start the Klaviyo sandbox (seed 42, scale small) in-process;
2. ingest every object into a fresh `data/warehouse.duckdb` (or `KLAVIYO_DUCKDB_PATH`): incremental objects as one
   run over the sandbox's whole date range (single-run backfill), snapshots and memberships captured now (today's
   capture), the derived `exclusions` view, and the Reporting API values of the last day a campaign went out
   (one request per report: at Klaviyo's 2 a minute the whole range would take a quarter of an hour);
3. build the demo models (enriched profiles, a VIP audience) and run activation back into the sandbox: a Bulk
   Profile Import polled to its outcome, and the VIP list reconciled to the audience;
4. re-ingest today's profiles, lists and memberships and show that Klaviyo (the sandbox) now holds what the
   warehouse sent.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import duckdb

from klaviyo_dagster.sandbox import run_sandbox

DEFAULT_DB = Path("data/warehouse.duckdb")
# Dagster's console logger at WARNING: the demo prints its own summary (the UI, `make dev`, shows every event).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _materialize(defs: dg.Definitions, keys: Sequence[dg.AssetKey], instance: dg.DagsterInstance,
                 **kwargs) -> dg.ExecuteInProcessResult:
    assets = list(defs.assets or [])
    return dg.materialize(assets, selection=list(keys), resources=defs.resources, instance=instance,
                          raise_on_error=True, run_config=QUIET, **kwargs)


def _print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  " + "  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  " + "  ".join("-" * w for w in widths))
    for r in rows:
        print("  " + "  ".join(str(v).rjust(w) if isinstance(v, int) else str(v).ljust(w)
                               for v, w in zip(r, widths, strict=True)))


def main() -> int:
    from klaviyo_dagster.activate.demo_models import DEFAULT_VIP_LIST
    from klaviyo_dagster.definitions import build_definitions
    from klaviyo_dagster.ingest import OBJECTS, asset_key
    from klaviyo_dagster.ingest.objects import REPORTS
    from klaviyo_dagster.warehouse import demo_report

    db_path = Path(os.environ.get("KLAVIYO_DUCKDB_PATH") or DEFAULT_DB)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (db_path, Path(f"{db_path}.wal")):
        stale.unlink(missing_ok=True)
    os.environ["KLAVIYO_DUCKDB_PATH"] = str(db_path)
    started = time.monotonic()

    with run_sandbox(seed=42, scale="small") as sandbox:
        os.environ["KLAVIYO_BASE_URL"] = sandbox.base_url
        os.environ["KLAVIYO_API_KEY"] = sandbox.api_key  # the sandbox's own key, not a secret
        first, last = sandbox.truth.date_range()
        print(f"sandbox: {sandbox.base_url}  data {first:%Y-%m-%d} .. {last:%Y-%m-%d %H:%M} UTC")
        defs = build_definitions(start_date=first.strftime("%Y-%m-%d"), include_demo_models=True, reports=True)
        partitions = defs.resolve_assets_def(asset_key(OBJECTS[0])).partitions_def
        assert partitions is not None
        keys = partitions.get_partition_keys()
        incremental = [asset_key(o) for o in OBJECTS if o.incremental]
        snapshots = [asset_key(o) for o in OBJECTS if not o.incremental]

        def requests() -> int:
            """API requests the sandbox answered since the last call."""
            used = sum(sandbox.stats().values())
            sandbox.reset_stats()
            return used

        requests()
        with dg.DagsterInstance.ephemeral() as instance:
            print(f"ingest: {len(incremental)} incremental objects over {keys[0]}..{keys[-1]} (one run)", end="")
            _materialize(defs, incremental, instance, tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            })
            print(f": {requests()} requests")
            print(f"ingest: {len(snapshots)} snapshot and derived objects (their current state, captured today)",
                  end="")
            _materialize(defs, snapshots, instance)
            print(f": {requests()} requests")
            # Reports are dated by send (a campaign's values on the day it went out): the last day before today
            # a campaign was sent, so campaign_values has rows too; flows send every day.
            sent = sorted(c["attributes"]["send_time"][:10] for c in sandbox.truth.records("campaign")
                          if c["attributes"]["status"] == "Sent" and c["attributes"].get("send_time"))
            report_day = max([d for d in sent if d <= keys[-2]] or [keys[-2]])
            print(f"ingest: {len(REPORTS)} Reporting API objects for {report_day} (the last day a campaign went "
                  "out)", end="")
            _materialize(defs, [asset_key(o) for o in REPORTS], instance, partition_key=report_day)
            print(f": {requests()} requests")

            activation_keys = [k for k in defs.resolve_all_asset_keys()
                               if k.path[0] == "activation_inputs" or k in (
                                   dg.AssetKey(["klaviyo", "profile_import"]),
                                   dg.AssetKey(["klaviyo", "list_membership_sync"]))]
            print("activate: demo models, profile import, list membership sync", end="")
            result = _materialize(defs, activation_keys, instance)
            print(f": {requests()} requests")
            activation = {
                mat.asset_key.to_user_string(): mat.metadata
                for mat in result.asset_materializations_for_node("klaviyo__profile_import")
                + result.asset_materializations_for_node("klaviyo__list_membership_sync")
            }
            print("re-ingest: today's profiles, lists and list memberships", end="")
            _materialize(defs, [asset_key("profiles")], instance, partition_key=keys[-1])
            _materialize(defs, [asset_key("lists"), asset_key("list_memberships")], instance)
            print(f": {requests()} requests")

    con = duckdb.connect(str(db_path), read_only=True)
    try:
        tables = demo_report.table_counts(con, [(o.name, o.primary_key) for o in (*OBJECTS, *REPORTS)])
        _print_table("What landed in DuckDB", ["table", "rows", "distinct keys"], tables)
        _print_table("klaviyo.exclusions (derived from klaviyo.profiles_current, no requests)",
                     ["channel", "source", "reason", "rows", "profiles"], demo_report.exclusions_by_reason(con))
        _print_table("Read back from Klaviyo: customer_tier on klaviyo.profiles_current (set by activation)",
                     ["customer_tier", "profiles"], demo_report.customer_tiers(con))
        audience = demo_report.audience_size(con)
        _print_table(f"Read back from Klaviyo: the VIP list (audience in the warehouse: {audience})",
                     ["list", "members"], demo_report.list_members(con, DEFAULT_VIP_LIST))
        _print_table("Profile import outcomes (klaviyo_activation.profile_import_log)", ["outcome", "rows"],
                     demo_report.import_outcomes(con))
    finally:
        con.close()
    for key, metadata in activation.items():
        shown = {k: getattr(v, "value", v) for k, v in metadata.items()
                 if not str(k).startswith(("preview", "plan"))}
        _print_table(f"Activation: {key}", ["metric", "value"], sorted(shown.items()))
    print(f"\ndone in {time.monotonic() - started:.0f} s; the tables are in {db_path} (schemas klaviyo, "
          "activation_inputs, klaviyo_activation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
