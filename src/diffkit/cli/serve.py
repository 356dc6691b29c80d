"""`diffkit serve`: the browser page over one or more bundles (every bundle under runs/ and models/ by default)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit serve`."""
    parser = subparsers.add_parser(
        "serve", help="a web page to generate, watch, edit and explain (needs the web extra)",
        description="Serve a gradio page over RUN bundles (default: every bundle under runs/ and models/). It "
                    "listens on 127.0.0.1 only unless --host says otherwise.")
    parser.add_argument("runs", metavar="RUN", nargs="*", help="run directories or bundles to serve")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to all)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--workers", type=int, default=None,
                        help="requests computed at once (default: 2, or 1 on a 1-core CPU); the rest wait in the queue")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per request (default 1, or DIFFKIT_THREADS / OMP_NUM_THREADS when set)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Find the bundles, then serve the page until interrupted."""
    import os

    from diffkit.errors import DiffkitError
    from diffkit.web import require_gradio

    require_gradio()
    if not 1 <= args.port <= 65535:
        raise DiffkitError(f"--port must be from 1 to 65535, not {args.port}.")
    workers = min(2, os.cpu_count() or 1) if args.workers is None else args.workers
    if workers < 1 or (args.threads is not None and args.threads < 1):
        raise DiffkitError(f"--workers and --threads must be at least 1, not {workers} and {args.threads}.")
    import torch

    from diffkit.web.models import ModelShelf, find_models

    shelf = ModelShelf(find_models(args.runs), device=args.device)  # refused before gradio's slow import

    from diffkit.web.app import serve

    # workers x threads <= cores, so the queue never oversubscribes the CPU; the start-up's automatic choice
    # (diffkit.threads) suits one command, not requests that run side by side. A user's own setting stands.
    if args.threads is not None or not {"DIFFKIT_THREADS", "OMP_NUM_THREADS"} & set(os.environ):
        torch.set_num_threads(args.threads or 1)
    print(f"diffkit serve: {len(shelf.names)} model(s): {', '.join(shelf.names)}")
    print(f"diffkit serve: open http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    try:
        serve(shelf, host=args.host, port=args.port, workers=workers)
    except OSError:  # gradio's own message names its launch() parameters, which mean nothing to a user
        raise DiffkitError(f"Cannot listen on {args.host}:{args.port}: the port is taken or the address is not "
                           "this machine's; choose another --port or --host.") from None
    return 0
