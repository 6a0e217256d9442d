"""``bookstream``: the command line of the platform.

    bookstream doctor                       what a run needs, and what is wrong
    bookstream topics                       create the configured topics (idempotent), list them
    bookstream publish --lobster M O        send a source to Kafka (--speed N for N x recorded)
    bookstream stream-job [--bounded]       the Flink stream job: book, features, signals, orders
    bookstream exec-sink [--bounded]        run the execution sink (risk, paper venue)
    bookstream history-sink [--bounded]     store every topic in its Iceberg table, exactly once
    bookstream replay [--run ID] [--verify] replay recorded history through the same jobs
    bookstream sql FILE_OR_QUERY            ClickHouse SQL (chDB) over the Iceberg history
    bookstream verify-book --binance F...   rebuild the book from files, compare with ground truth
    bookstream demo                         the whole pipeline on the shipped sample (or --lobster /
                                            --binance files), summary as the last JSON line

Commands that produce a result print it as one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from udfs.config import load_config

__all__ = ["main"]

logger = logging.getLogger("bookstream")


def _add_source_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    group = parser.add_argument_group(
        "source (any number of each; default: the shipped sample)" if not required else "source"
    )
    group.add_argument(
        "--lobster",
        nargs=2,
        action="append",
        metavar=("MESSAGE_FILE", "ORDERBOOK_FILE"),
        type=Path,
        default=[],
        help="a LOBSTER message file and its orderbook file",
    )
    group.add_argument(
        "--binance",
        nargs="+",
        action="append",
        metavar="FILE",
        type=Path,
        default=[],
        help="a Binance raw capture: files of one stream, in order",
    )


def _source(args: argparse.Namespace):
    from udfs.market.adapters.sources import Source

    if not args.lobster and not args.binance:
        return Source.sample()
    return Source(lobster=[tuple(p) for p in args.lobster], binance=list(args.binance))


def _emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, separators=(",", ":"), default=str), flush=True)


def cmd_doctor(args: argparse.Namespace) -> int:
    from jobs.doctor import run_doctor

    ok, report = run_doctor(load_config(), need_broker=not args.offline)
    _emit(report)
    return 0 if ok else 1


def cmd_topics(args: argparse.Namespace) -> int:
    from jobs.kafka_io import create_topics, existing_topics

    cfg = load_config()
    created = create_topics(cfg)
    have = existing_topics(cfg)
    _emit({"created": created, "topics": {s.name: have.get(s.name) for s in cfg.topics.specs()}})
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from jobs.kafka_io import create_topics
    from jobs.publish import publish

    cfg = load_config()
    create_topics(cfg)
    res = publish(
        cfg, _source(args), speed=args.speed, progress=False if args.no_progress else None
    )
    _emit(
        {
            "events_in": res.events_in,
            "published": res.published,
            "dead_lettered": res.dead_lettered,
            "wall_s": round(res.wall_s, 3),
            "events_per_s": round(res.rate, 1),
        }
    )
    return 0


def cmd_stream_job(args: argparse.Namespace) -> int:
    from jobs.stream_job import main as job_main

    argv = ["--group-id", args.group_id]
    if args.bounded:
        argv.append("--bounded")
    if args.restore_latest:
        argv.append("--restore-latest")
    if args.restore:
        argv += ["--restore", str(args.restore)]
    job_main(argv)
    return 0


def cmd_exec_sink(args: argparse.Namespace) -> int:
    from jobs.execution_sink import main as sink_main

    argv = ["--group-id", args.group_id] + (["--bounded"] if args.bounded else [])
    return sink_main(argv)


def cmd_history_sink(args: argparse.Namespace) -> int:
    from jobs.history_sink import main as history_main

    return history_main(
        (["--bounded"] if args.bounded else []) + (["--only", *args.only] if args.only else [])
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from jobs.replay import run_from_args

    summary = run_from_args(args)
    _emit(summary)
    return 1 if summary.get("identical") is False else 0


def cmd_sql(args: argparse.Namespace) -> int:
    from jobs.sql import sql_command

    return sql_command(
        load_config(),
        args.query,
        fmt=args.format,
        list_files=args.list,
        engine="mergetree" if args.mergetree else "lake",
        ddl=args.ddl,
        write=args.write_ddl,
    )


def cmd_verify_book(args: argparse.Namespace) -> int:
    if bool(args.lobster) == bool(args.binance):
        print(
            "verify-book: give exactly one of --lobster MESSAGE_FILE ORDERBOOK_FILE or "
            "--binance FILE [FILE...]",
            file=sys.stderr,
        )
        return 2
    if args.lobster:
        from udfs.market.adapters.lobster import verify_lobster

        message_file, orderbook_file = args.lobster[0]
        result = dict(verify_lobster(message_file, orderbook_file))
    else:
        from udfs.market.adapters.binance import verify_binance

        result = dict(verify_binance(args.binance[0]))
    mismatches = result.pop("mismatches", [])
    for m in mismatches:
        print(f"mismatch: {json.dumps(m, default=str)}", file=sys.stderr)
    result.pop("book_error_samples", None)
    _emit(result)
    return 0 if result["matched"] == result["checked"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    summary = run_demo(
        load_config(), _source(args), speed=args.speed, progress=False if args.no_progress else None
    )
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}", file=sys.stderr)
    _emit(summary)
    return 0 if summary["reconciled"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bookstream", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("doctor", help="check Java, jars, Flink/connector versions, broker, topics")
    p.add_argument("--offline", action="store_true", help="skip the broker and topic checks")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("topics", help="create the configured topics (idempotent) and list them")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("publish", help="publish a source's L2 events to the events topic")
    _add_source_args(p)
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="replay at N x the recorded pace (default: as fast as possible)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser(
        "stream-job", aliases=["run-job"], help="run the Flink stream job (Kafka -> Kafka)"
    )
    p.add_argument(
        "--bounded",
        action="store_true",
        help="stop at the events topic's current end (default: run until killed)",
    )
    p.add_argument("--group-id", default="bookstream-features")
    p.add_argument("--restore", type=Path, metavar="CHECKPOINT", help="a chk-N directory")
    p.add_argument(
        "--restore-latest",
        action="store_true",
        help="resume from the newest retained checkpoint, if any",
    )
    p.set_defaults(func=cmd_stream_job)

    p = sub.add_parser(
        "exec-sink", help="run the execution sink (orders -> risk -> paper venue -> executions)"
    )
    p.add_argument(
        "--bounded",
        action="store_true",
        help="stop at the inputs' current end (default: run until killed)",
    )
    p.add_argument("--group-id", default="bookstream-exec-sink")
    p.set_defaults(func=cmd_exec_sink)

    p = sub.add_parser(
        "history-sink",
        help="store every topic in its Iceberg table (offsets in the snapshot: exactly once)",
    )
    p.add_argument(
        "--bounded",
        action="store_true",
        help="stop once every topic is stored up to its current end",
    )
    p.add_argument("--only", nargs="+", metavar="TABLE", help="only these tables")
    p.set_defaults(func=cmd_history_sink)

    p = sub.add_parser(
        "replay",
        help="replay recorded events from Iceberg through the same job "
        "and execution sink; --verify compares with the live run "
        "(JSON: orders_live, orders_replayed, orders_identical, "
        "fills_live, fills_identical, first_divergence)",
    )
    p.add_argument(
        "--run", default=None, help="a recorded run id, or 'latest' (default, unless --from/--to)"
    )
    p.add_argument("--from", dest="time_from", help="exchange time, ISO-8601 (UTC) or ns")
    p.add_argument("--to", dest="time_to", help="exchange time (exclusive)")
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="N x the recorded pace (default: as fast as possible)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="compare the replay's orders and fills with the recorded live run",
    )
    p.add_argument(
        "--keep-topics",
        action="store_true",
        help="keep the replay's topics (default: deleted after the run)",
    )
    p.add_argument(
        "--no-history-sink",
        action="store_true",
        help="do not bring history up to date before replaying",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "sql",
        help="ClickHouse SQL (chDB) over the Iceberg history: a file of "
        "sql/, a path or a query; --list shows the library",
    )
    p.add_argument(
        "query",
        nargs="?",
        metavar="FILE_OR_QUERY",
        help="a file of sql/ (ohlcv_1m or ohlcv_1m.sql), a path, or a query",
    )
    p.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="table (ClickHouse PrettyCompact), csv (with header), json (one line)",
    )
    p.add_argument("--list", action="store_true", help="list sql/*.sql and what each answers")
    p.add_argument(
        "--mergetree",
        action="store_true",
        help="run on MergeTree copies made by the sql/clickhouse DDL (as on a "
        "server) instead of reading Iceberg in place",
    )
    p.add_argument("--ddl", action="store_true", help="print the MergeTree DDL of every table")
    p.add_argument(
        "--write-ddl",
        action="store_true",
        help="regenerate sql/clickhouse/*.sql from udfs/history.py",
    )
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser(
        "verify-book",
        help="rebuild the book from files and compare it with the ground truth they carry",
    )
    _add_source_args(p, required=True)
    p.set_defaults(func=cmd_verify_book)

    p = sub.add_parser(
        "demo", help="publish -> Flink job -> summary, on the shipped sample or your files"
    )
    _add_source_args(p)
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="publish at N x the recorded pace (default: as fast as possible)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # PyFlink's Beam layer logs chatter at INFO
    for noisy in ("apache_beam", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
