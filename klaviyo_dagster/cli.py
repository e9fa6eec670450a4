"""The `klaviyo-dagster` console script. Subcommands: `sandbox` (serve the offline Klaviyo sandbox)."""

from __future__ import annotations

import argparse

from klaviyo_dagster.sandbox.serve import add_arguments, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="klaviyo-dagster", description="klaviyo-dagster command line")
    sub = parser.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("sandbox", help="serve the offline Klaviyo sandbox on 127.0.0.1"))
    args = parser.parse_args(argv)
    if args.command == "sandbox":
        return serve(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
