"""Serve the sandbox for benchmarks: `python -m bench.serve [sandbox CLI args]`.

Same as `python -m klaviyo_dagster.sandbox`, except that, unless `--as-is` is given, the request handler
sends with TCP_NODELAY. The sandbox's stdlib handler writes headers and body in two sends; with Nagle on,
the client's delayed ACK stalls every small response by ~40 ms (measured: a 50-flow page 46 ms -> 4 ms),
which would make the benchmarks measure a Nagle stall instead of the connector. Klaviyo's servers do not
stall like that. When the sandbox sets `disable_nagle_algorithm` itself this module changes nothing.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from klaviyo_dagster.sandbox import server
    from klaviyo_dagster.sandbox.serve import main as serve_main

    if "--as-is" in argv:
        argv = [a for a in argv if a != "--as-is"]
    else:
        server._Handler.disable_nagle_algorithm = True
    return serve_main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
