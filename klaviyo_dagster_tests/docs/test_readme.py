"""The README documents what the code does: its objects table is the one the code generates."""

from __future__ import annotations

from pathlib import Path

from klaviyo_dagster.ingest.doc import objects_markdown
from klaviyo_dagster.ingest.objects import OBJECTS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_objects_table_matches_the_objects_table() -> None:
    text = README.read_text()
    assert objects_markdown() in text, "README drifted from OBJECTS: run `python scripts/readme_objects.py`"
    for obj in OBJECTS:
        assert f"`klaviyo.{obj.name}`" in text


def test_readme_starts_with_the_two_commands() -> None:
    lines = [line for line in README.read_text().splitlines() if line.startswith("make ")]
    assert [line.split()[1] for line in lines[:2]] == ["demo", "test"]


def _block_after(text: str, marker: str, fence: str) -> str:
    start = text.index(fence, text.index(marker)) + len(fence)
    return text[start:text.index("```", start)]


def test_readme_yaml_route_comes_first_and_its_defs_yaml_is_what_the_scaffolder_writes() -> None:
    import warnings

    import yaml

    from klaviyo_dagster.components.scaffolder import default_attributes

    text = README.read_text()
    assert text.index("### The YAML route") < text.index("### The Python route")
    shown = yaml.safe_load(_block_after(text, "### The YAML route", "```yaml\n"))
    assert shown["type"] == "klaviyo_dagster.KlaviyoComponent"
    assert shown["attributes"] == default_attributes()
    # ... and the Python route's example builds.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scope: dict = {}
        exec(_block_after(text, "### The Python route", "```python\n"), scope)  # noqa: S102
    assert {s.name for s in scope["defs"].schedules} == {"klaviyo_ingest_daily", "klaviyo_snapshots_daily",
                                                         "klaviyo_activation_schedule", "klaviyo_deletion_sweep_weekly"}


def test_readme_lists_every_sandbox_semantics_switch() -> None:
    from klaviyo_dagster.sandbox.semantics import switch_table_markdown

    assert switch_table_markdown() in README.read_text(), "README's --semantics table drifted from semantics.py"
