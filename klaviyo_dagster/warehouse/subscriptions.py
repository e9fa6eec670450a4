"""SQL of the consent sync: its state and log tables, and the plan of a consent table against what the sync
last handled.

One row per (channel, person, list) is kept (with the number of different states the table asks for it,
so conflicts can be refused); rows whose desired state the sync already handled are left out.
:class:`ConsentPlan` offers the counts, the rows to handle chunk by chunk, and a channel's row count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from klaviyo_dagster.warehouse.activation_inputs import text
from klaviyo_dagster.warehouse.activation_state import SCHEMA, create_tables
from klaviyo_dagster.warehouse.sql import quote_ident, quote_table

STATE = f"{SCHEMA}.subscription_state"
LOG = f"{SCHEMA}.subscription_log"
STATE_COLUMNS = ["sync_name", "channel", "identity", "list_id", "state", "outcome", "synced_at"]
LOG_COLUMNS = ["run_id", "sync_name", "changed_by", "channel", "identity", "list_id", "action", "from_state",
               "to_state", "outcome", "reason", "source_reason", "job_ref", "logged_at"]
DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {STATE} (sync_name VARCHAR, channel VARCHAR, identity VARCHAR, list_id VARCHAR,
        state VARCHAR, outcome VARCHAR, synced_at TIMESTAMPTZ)""",
    f"""CREATE TABLE IF NOT EXISTS {LOG} (run_id VARCHAR, sync_name VARCHAR, changed_by VARCHAR, channel VARCHAR,
        identity VARCHAR, list_id VARCHAR, action VARCHAR, from_state VARCHAR, to_state VARCHAR, outcome VARCHAR,
        reason VARCHAR, source_reason VARCHAR, job_ref VARCHAR, logged_at TIMESTAMPTZ)""",
)


def ensure_tables(warehouse: Any) -> None:
    """Create the consent sync's state and log tables when missing."""
    create_tables(warehouse, DDL)


@dataclass(frozen=True)
class ConsentPlan:
    """The plan of consent ``table`` (columns ``available``) under the given column names."""

    table: str
    available: Sequence[str]
    email: str | None
    phone_number: str | None
    channel: str
    state: str
    list_id: str | None
    consented_at: str | None
    reason: str | None

    def _channel(self) -> str:
        return f"lower({text(self.channel, self.available)})"

    def ctes(self) -> str:
        channel, email = self._channel(), f"lower({text(self.email, self.available)})"
        phone = text(self.phone_number, self.available)
        consented = (f"t.{quote_ident(self.consented_at)}" if self.consented_at and self.consented_at in self.available
                     else "NULL")
        return (
            f"WITH src AS (SELECT {channel} AS __channel, lower({text(self.state, self.available)}) AS __state, "
            f"{text(self.list_id, self.available)} AS __list, CASE {channel} WHEN 'sms' THEN {phone} ELSE {email} END "
            f"AS __identity, {consented} AS __consented_at, {text(self.reason, self.available)} AS __reason "
            f"FROM {quote_table(self.table)} t), "
            "keyed AS (SELECT *, count(DISTINCT __state) OVER (PARTITION BY __channel, __identity, coalesce(__list, '')) "
            "AS __states FROM src), "
            "dedup AS (SELECT * FROM keyed QUALIFY row_number() OVER (PARTITION BY __channel, __identity, "
            "coalesce(__list, '') ORDER BY __state) = 1), "
            f"known AS (SELECT * FROM {STATE} WHERE sync_name = $sync), "
            "todo AS (SELECT d.* FROM dedup d ANTI JOIN known k ON k.channel = d.__channel AND k.identity = d.__identity "
            "AND k.list_id IS NOT DISTINCT FROM d.__list AND k.state = d.__state) "
        )

    def counts(self, warehouse: Any, sync_name: str) -> tuple[int, int, int]:
        """(rows, distinct (channel, person, list), of those not yet handled in their desired state)."""
        row = warehouse.query(self.ctes() + "SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM dedup), "
                              "(SELECT count(*) FROM todo)", {"sync": sync_name})[0]
        return int(row[0]), int(row[1]), int(row[2])

    def todo(self, warehouse: Any, sync_name: str) -> Iterator[pd.DataFrame]:
        """The rows to handle (``__channel``, ``__state``, ``__list``, ``__identity``, ``__consented_at``,
        ``__reason``, ``__states``), chunk by chunk."""
        return warehouse.read_chunks(self.ctes() + "SELECT * FROM todo", {"sync": sync_name})

    def channel_rows(self, warehouse: Any, channel: str) -> int:
        """Rows of the table on ``channel``."""
        return int(warehouse.query(
            f"SELECT count(*) FROM {quote_table(self.table)} t WHERE {self._channel()} = ?", [channel])[0][0])
