"""Rewrite the README's generated objects table from `klaviyo_dagster.ingest.objects.OBJECTS`.

Run: ``python scripts/readme_objects.py`` (a test fails when the README and the table drift apart).
"""

from __future__ import annotations

from pathlib import Path

from klaviyo_dagster.ingest.doc import BEGIN, END, objects_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> None:
    text = README.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"README.md has no {BEGIN!r} marker")
    README.write_text(head + objects_markdown() + tail)
    print("README.md: objects table rewritten")


if __name__ == "__main__":
    main()
