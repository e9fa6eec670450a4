"""SQL of the profile import diff: which rows of a profiles table are new or changed since Klaviyo last
accepted them.

One query hashes every input row, gives it an identity, keeps one row per identity (the latest by
``latest_by``, then the lowest hash) and compares it with the sync state and the rows of jobs still open;
:class:`ProfileDiff` offers its counts, the repeated identities and the changed rows, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from klaviyo_dagster.warehouse.activation_inputs import content_hash, identity, one_per_key
from klaviyo_dagster.warehouse.activation_state import IMPORT_JOB_ROWS, IMPORT_JOBS, STATE, UNSETTLED
from klaviyo_dagster.warehouse.sql import quote_table


@dataclass(frozen=True)
class DiffCounts:
    """Rows of the table, distinct identities, unchanged rows (state holds their hash) and rows in open jobs."""

    rows: int
    identities: int
    unchanged: int
    in_open_jobs: int


@dataclass(frozen=True)
class ProfileDiff:
    """The diff of ``table`` for one sync: ``hash_version`` and ``hashed_columns`` make the content hash,
    ``identifiers`` (``{kind: column}``, strongest first) with ``prefixes`` the identity."""

    table: str
    hash_version: str
    hashed_columns: Sequence[str]
    identifiers: Mapping[str, str]
    prefixes: Mapping[str, str]
    latest_by: str | None = None

    def ctes(self) -> str:
        """CTEs ``ided`` (every row with __hash and __identity), ``dedup`` (one row per identity), ``known``
        (state) and ``inflight`` (rows of jobs still open or of POSTs without a known outcome)."""
        ident = identity(self.identifiers, self.prefixes, fallback="'row:' || __hash")
        return (
            f"WITH src AS (SELECT t.*, {content_hash(self.hash_version, self.hashed_columns)} AS __hash "
            f"FROM {quote_table(self.table)} t), "
            f"ided AS (SELECT t.*, {ident} AS __identity FROM src t), "
            f"dedup AS ({one_per_key('ided', '__identity', self.latest_by)}), "
            f"known AS (SELECT identity, content_hash FROM {STATE} WHERE sync_name = $sync), "
            f"inflight AS (SELECT r.identity, r.content_hash FROM {IMPORT_JOB_ROWS} r JOIN {IMPORT_JOBS} j "
            f"USING (job_id) WHERE j.sync_name = $sync AND j.status IN {UNSETTLED}) "
        )

    def counts(self, warehouse: Any, sync_name: str) -> DiffCounts:
        row = warehouse.query(
            self.ctes() + "SELECT (SELECT count(*) FROM ided), (SELECT count(*) FROM dedup), "
            "(SELECT count(*) FROM dedup d SEMI JOIN known k ON k.identity = d.__identity AND k.content_hash = d.__hash), "
            "(SELECT count(*) FROM dedup d SEMI JOIN inflight f ON f.identity = d.__identity "
            "AND f.content_hash = d.__hash)",
            {"sync": sync_name},
        )[0]
        return DiffCounts(*(int(v) for v in row))

    def repeated_identities(self, warehouse: Any, sync_name: str, limit: int = 1000) -> list[str]:
        """Identities more than one row carries (sorted, at most ``limit``)."""
        return [row[0] for row in warehouse.query(
            self.ctes() + f"SELECT __identity FROM ided GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT {int(limit)}",
            {"sync": sync_name})]

    def changed(self, warehouse: Any, sync_name: str, *, full_resync: bool, chunk_rows: int) -> Iterator[pd.DataFrame]:
        """The rows to send (one per identity; with their ``__identity`` and ``__hash``): not in a job still
        open and, unless ``full_resync``, not already accepted with the same hash; chunk by chunk."""
        sql = self.ctes() + "SELECT d.* FROM dedup d" + (
            "" if full_resync else
            " ANTI JOIN known k ON k.identity = d.__identity AND k.content_hash = d.__hash"
        ) + " ANTI JOIN inflight f ON f.identity = d.__identity AND f.content_hash = d.__hash"
        return warehouse.read_chunks(sql, {"sync": sync_name}, chunk_rows=chunk_rows)
