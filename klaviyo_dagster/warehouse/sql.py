"""Small SQL helpers shared by the warehouse modules: identifier quoting and type normalisation."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A DuckDB identifier in double quotes (embedded quotes doubled), safe for any attribute name."""
    return '"' + str(name).replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def table_parts(table: str) -> list[str]:
    """``schema.table`` or ``table`` -> its parts, unquoted. A part may be a double-quoted identifier
    holding any character (``"my-schema"."vip list.2026"``, ``""`` for a quote inside), as DuckDB reads it."""
    parts: list[str] = []
    buf, i, text = "", 0, table.strip()
    while i < len(text):
        ch = text[i]
        if ch == '"':
            j = i + 1
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise ValueError(f"table name {table!r} has an unterminated quoted identifier")
                if text[k + 1:k + 2] == '"':
                    buf += text[j:k] + '"'
                    j = k + 2
                    continue
                buf += text[j:k]
                i = k + 1
                break
            continue
        if ch == ".":
            parts.append(buf)
            buf, i = "", i + 1
            continue
        buf += ch
        i += 1
    parts.append(buf)
    if not 1 <= len(parts) <= 2 or not all(p.strip() for p in parts):
        raise ValueError(f"table name {table!r} must look like 'schema.table' or 'table' (double-quote a part "
                         "holding dots or other characters: '\"my-schema\".\"vip.list\"')")
    return parts


def quote_table(table: str) -> str:
    """Quoted ``"schema"."table"`` for SQL."""
    return ".".join(quote_ident(p) for p in table_parts(table))


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"``."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


_ALIASES = {
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ",
    "INT8": "BIGINT",
    "INT64": "BIGINT",
    "LONG": "BIGINT",
    "STRING": "VARCHAR",
    "TEXT": "VARCHAR",
    "BOOL": "BOOLEAN",
    "FLOAT8": "DOUBLE",
}


def normalize_type(sql_type: str) -> str:
    """Upper-case type name with common aliases folded (``timestamp with time zone`` -> TIMESTAMPTZ)."""
    t = " ".join(sql_type.strip().upper().split())
    return _ALIASES.get(t, t)
