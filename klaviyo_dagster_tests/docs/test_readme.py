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
