"""The table-change sensor fires once per change of its tables and never for an unchanged table."""

import pytest
from dagster import DagsterInstance, Definitions, RunRequest, SensorResult, SkipReason, build_sensor_context

from klaviyo_dagster.activate import ACTIVATION_JOB, ACTIVATION_SENSOR
from klaviyo_dagster.automation.sensors import build_table_change_sensor
from klaviyo_dagster.factories import build_activation_definitions
from klaviyo_dagster.resources import KlaviyoResource
from klaviyo_dagster.warehouse import WarehouseResource


def _defs(*tables: str) -> Definitions:
    return Definitions.merge(
        build_activation_definitions(*tables),
        Definitions(resources={"klaviyo": KlaviyoResource(api_key="pk_unused"), "warehouse": WarehouseResource()}),
    )


@pytest.fixture()
def warehouse_resource(tmp_path):
    return WarehouseResource(database=str(tmp_path / "wh.duckdb"))


def _tick(sensor_def, resource, instance, cursor):
    ctx = build_sensor_context(instance=instance, cursor=cursor, resources={"warehouse": resource})
    result = sensor_def(ctx)
    if isinstance(result, SensorResult):
        assert len(result.run_requests) == 1 and isinstance(result.run_requests[0], RunRequest)
        return True, result.cursor
    assert isinstance(result, SkipReason)
    return False, cursor


@pytest.mark.parametrize("updated_column", [None, "updated_at"])
def test_sensor_fires_once_per_change(warehouse_resource, updated_column):
    defs = _defs("inputs.people", "inputs.audience")
    job = defs.resolve_job_def(ACTIVATION_JOB)
    sensor_def = build_table_change_sensor("watch_people", job, {"inputs.people": updated_column})
    wh = warehouse_resource.get_warehouse()
    instance = DagsterInstance.ephemeral()

    fired, cursor = _tick(sensor_def, warehouse_resource, instance, None)
    assert not fired and cursor is None  # table missing: wait, do not fire

    wh.execute("CREATE SCHEMA inputs")
    wh.execute("CREATE TABLE inputs.people AS SELECT 'a@example.com' AS email, TIMESTAMPTZ '2026-01-01' AS updated_at")
    fired, cursor = _tick(sensor_def, warehouse_resource, instance, cursor)
    assert fired and cursor  # first sight of the table is a change
    for _ in range(3):
        fired, same = _tick(sensor_def, warehouse_resource, instance, cursor)
        assert not fired and same == cursor

    wh.execute("INSERT INTO inputs.people VALUES ('b@example.com', TIMESTAMPTZ '2026-01-02')")
    fired, cursor2 = _tick(sensor_def, warehouse_resource, instance, cursor)
    assert fired and cursor2 != cursor
    fired, _ = _tick(sensor_def, warehouse_resource, instance, cursor2)
    assert not fired


def test_content_hash_sees_an_update_that_keeps_the_row_count(warehouse_resource):
    defs = _defs("inputs.people", "inputs.audience")
    sensor_def = build_table_change_sensor("watch", defs.resolve_job_def(ACTIVATION_JOB), ["inputs.people"])
    wh = warehouse_resource.get_warehouse()
    wh.execute("CREATE SCHEMA inputs")
    wh.execute("CREATE TABLE inputs.people AS SELECT * FROM (VALUES ('a@example.com', 1), ('b@example.com', 2)) t(email, n)")
    instance = DagsterInstance.ephemeral()
    fired, cursor = _tick(sensor_def, warehouse_resource, instance, None)
    assert fired
    wh.execute("UPDATE inputs.people SET n = 3 WHERE email = 'b@example.com'")
    fired, cursor2 = _tick(sensor_def, warehouse_resource, instance, cursor)
    assert fired and cursor2 != cursor


def test_default_definitions_ship_a_stopped_sensor_and_schedule_for_the_activation_job():
    defs = _defs()
    sensor_def = defs.resolve_sensor_def(ACTIVATION_SENSOR)
    schedule = defs.resolve_schedule_def("klaviyo_activation_schedule")
    assert sensor_def.job_name == ACTIVATION_JOB and schedule.job_name == ACTIVATION_JOB
    assert sensor_def.default_status.value == "STOPPED" and schedule.default_status.value == "STOPPED"
    job = defs.resolve_job_def(ACTIVATION_JOB)
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {
        "klaviyo/profile_import", "klaviyo/list_membership_sync"}
