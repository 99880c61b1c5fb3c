"""`pack-agent listen --broker HOST:PORT`: the reference backend subscriber.

Thin over :mod:`pack_agent.api.subscriber`: de-duplicates by ``event_id``, reports
``seq`` gaps per vehicle (and when they close), and prints the events as JSON
lines on stdout or keeps them in SQLite (``--store``), a JSON-lines file
(``--jsonl``) or PostgreSQL (``--database postgresql://...``, committed in batches;
several listeners with one ``--share`` group split the load and store each event
once). Reports go to stderr; the last stderr line is a JSON summary.
Exit 0, or 1 when ``--count`` events did not arrive within ``--timeout``.
"""

from __future__ import annotations

import argparse

HELP = "subscribe to pack-agent events as a backend would (de-duplicate, check seq, keep)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, metavar="HOST:PORT", help="e.g. localhost:8883")
    parser.add_argument("--prefix", default="pack-agent/v1", help="topic prefix (pack-agent/v1)")
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--client-id", default="", help="MQTT client id (default: random)")
    parser.add_argument(
        "--share", metavar="GROUP", help="MQTT v5 shared subscription $share/GROUP/... (scale out)"
    )
    parser.add_argument(
        "--session-expiry",
        type=int,
        default=0,
        metavar="S",
        help="keep the session (and queued events) this long while away; needs --client-id",
    )
    parser.add_argument("--ca-file", help="CA of the broker's certificate (turns TLS on)")
    parser.add_argument("--cert-file", help="this backend's client certificate (mutual TLS)")
    parser.add_argument("--key-file", help="its key")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument(
        "--allow-insecure", action="store_true", help="allow plaintext to a remote broker"
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--store", metavar="FILE.sqlite", help="keep events in this SQLite file")
    out.add_argument("--jsonl", metavar="FILE", help="append events to this JSON-lines file")
    out.add_argument(
        "--database",
        metavar="postgresql://...",
        help="keep events in PostgreSQL (needs pack-agent[backend]: psycopg 3)",
    )
    parser.add_argument(
        "--batch", type=int, default=500, metavar="N", help="--database: commit every N events"
    )
    parser.add_argument(
        "--batch-ms", type=float, default=50.0, metavar="T",
        help="--database: ... or every T ms, whichever first (50)",
    )  # fmt: skip
    parser.add_argument(
        "--receive-maximum", type=int, metavar="N",
        help="MQTT v5 Receive Maximum: messages the broker may have sent and not yet had "
        "acknowledged (default: 2 x --batch with --database, else 1000; bounds memory)",
    )  # fmt: skip
    parser.add_argument("--count", type=int, metavar="N", help="stop after N new events")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--quiet", "-q", action="store_true", help="no reports, only the summary")


def _broker(text: str) -> tuple[str, int]:
    from pack_agent.errors import PackAgentError

    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PackAgentError(f"--broker: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from pack_agent.api.subscriber import (
        EventSubscriber,
        JsonlSink,
        PostgresSink,
        PrintSink,
        Sink,
        SqliteSink,
        SubscriberSettings,
    )
    from pack_agent.errors import PackAgentError

    host, port = _broker(args.broker)
    receive_maximum = args.receive_maximum
    if receive_maximum is None:
        receive_maximum = max(2 * args.batch, 100) if args.database else 1000
    if not 1 <= receive_maximum <= 65535:
        raise PackAgentError(f"--receive-maximum must be 1-65535, got {receive_maximum}")
    if args.session_expiry > 0 and not args.client_id:
        raise PackAgentError("--session-expiry needs --client-id (a session belongs to an id)")
    settings = SubscriberSettings(
        host=host,
        port=port,
        prefix=args.prefix.rstrip("/"),
        protocol=args.protocol,
        client_id=args.client_id,
        share_group=args.share,
        session_expiry_s=args.session_expiry,
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        username=args.username,
        password=args.password,
        allow_insecure=args.allow_insecure,
        receive_maximum=receive_maximum,
    )
    sink: Sink | PostgresSink
    if args.database:
        if not args.database.startswith(("postgresql://", "postgres://")):
            raise PackAgentError(
                f"--database: expected a postgresql://USER@HOST:PORT/DB URL, got {args.database!r}"
            )
        sink = PostgresSink(args.database, batch=args.batch, batch_ms=args.batch_ms)
    elif args.store:
        sink = SqliteSink(args.store)
    elif args.jsonl:
        sink = JsonlSink(args.jsonl)
    else:
        sink = PrintSink(sys.stdout)

    def report(line: str) -> None:
        if not args.quiet:
            print(f"listen: {line}", file=sys.stderr, flush=True)

    listener = EventSubscriber(settings, sink, report)
    listener.start()
    ok = False
    try:
        ok = listener.run(count=args.count, timeout=args.timeout)
    finally:
        summary = listener.stop()
        print(json.dumps(summary.to_dict()), file=sys.stderr, flush=True)
    return 0 if ok else 1
