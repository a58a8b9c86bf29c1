"""``python -m topaz_nb.sandbox``: run a sandbox in the foreground."""

from __future__ import annotations

import argparse

from . import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m topaz_nb.sandbox",
        description="Run a local Topaz-compatible API and storage server with demo jobs.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765,
                        help="API port (default: %(default)s; 0 picks a free port)")
    parser.add_argument("--storage-port", type=int, default=0,
                        help="storage port (default: a free port)")
    parser.add_argument("--api-key", default=None,
                        help="key the API accepts (default: a random one, printed at start)")
    parser.add_argument("--no-demo", dest="demo", action="store_false",
                        help="start without the demo jobs")
    args = parser.parse_args(argv)
    serve(host=args.host, port=args.port, storage_port=args.storage_port,
          api_key=args.api_key, demo=args.demo)


if __name__ == "__main__":
    main()
