"""`voicegate` (also `python -m gateway`): serve, call, bench, emulate, dial, bookings."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from providers.settings import Settings, load_settings_or_report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("commands: serve | call | bench | emulate | dial | bookings   (voicegate COMMAND --help)")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    match command:
        case "serve":
            return serve(rest)
        case "call":
            from loadgen.simcaller import main as call_main

            return call_main(rest)
        case "emulate":
            from emulators.cli import main as emulate_main

            return emulate_main(rest)
        case "bench":
            from loadgen.bench import main as bench_main

            return bench_main(rest)
        case "dial":
            from gateway.dial import main as dial_main

            return dial_main(rest)
        case "bookings":
            return bookings(rest)
    print(f"voicegate: unknown command {command!r}", file=sys.stderr)
    return 2


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="voicegate serve", description="Run the gateway.")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None, help="default: $PORT or 8000")
    parser.add_argument("--workers", type=int, default=None, help="default: $WEB_CONCURRENCY or 1")
    args = parser.parse_args(argv)
    settings = load_settings_or_report()
    if settings is None:
        return 2
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v}
    if overrides:
        settings = Settings.from_env(**overrides)

    import uvicorn

    from gateway.direct_receive import DirectReceiveProtocol  # media frames handled as they arrive
    from gateway.http_protocol import HttpProtocol  # frees each upgraded connection's HTTP side
    from gateway.logs import setup_logging
    # SIGTERM drains (calls finish or are handed over) instead of cutting every call (gateway/serving.py).
    from gateway.serving import SHUTDOWN_GRACE_SECONDS, DrainingMultiprocess, DrainingServer

    setup_logging(settings.log_level, settings.secrets())
    common = dict(host=settings.host, port=settings.port, log_config=None, http=HttpProtocol,
                  ws=DirectReceiveProtocol, ws_max_size=settings.max_message_bytes, lifespan="on",
                  timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
                  # X-Forwarded-* are trusted by TRUSTED_PROXY_HOPS alone (gateway/public_urls.py,
                  # gateway/security.py), not also by uvicorn's default trust of 127.0.0.1.
                  proxy_headers=False)
    if settings.workers > 1:
        _prepare_multiprocess_metrics()
        config = uvicorn.Config("gateway.asgi:app", workers=settings.workers, **common)
        with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl+C is not a traceback
            DrainingMultiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    from gateway.app import create_app

    config = uvicorn.Config(create_app(settings), **common)
    server = DrainingServer(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 3  # uvicorn's STARTUP_FAILURE


def _prepare_multiprocess_metrics() -> None:
    """prometheus_client's multiprocess mode: every worker writes to files in one directory."""
    import shutil
    import tempfile

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="voicegate-metrics-")
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def bookings(argv: list[str]) -> int:
    import json

    from dialog.store import Store
    from gateway.logs import mask_number

    parser = argparse.ArgumentParser(prog="voicegate bookings", description="List stored bookings.")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    parser.add_argument("--db", default=None, help="default: $VOICEGATE_DB")
    args = parser.parse_args(argv)
    settings = load_settings_or_report() if not args.db else None
    if not args.db and settings is None:
        return 2
    store = Store(args.db or settings.voicegate_db)
    rows = [{**b.to_dict(), "caller": mask_number(b.caller)} for b in store.list_bookings()]
    if args.json:
        print(json.dumps({"bookings": rows}, indent=2, default=str))
    else:
        for row in rows:
            print(f"{row['start']}  {row['caller']:<16} {row['call_sid']}")
        print(f"{len(rows)} booking(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
