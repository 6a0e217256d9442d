"""``bookstream``: the command line of the platform.

    bookstream doctor                       what a run needs, what is wrong, where the logs are
    bookstream config                       the effective configuration and where each value
                                            came from (default, file, environment)
    bookstream topics                       create the configured topics (idempotent), list them
    bookstream publish --lobster M O        send a source to Kafka (--speed N for N x recorded)
    bookstream stream-job [--bounded]       the Flink stream job: book, features, signals, orders
    bookstream exec-sink [--bounded]        run the execution sink (risk, paper venue)
    bookstream history-sink [--bounded]     store every topic in its Iceberg table, exactly once
    bookstream replay [--run ID] [--verify] replay recorded history through the same jobs
    bookstream sql FILE_OR_QUERY            ClickHouse SQL (chDB) over the Iceberg history
    bookstream audit verify [--anchor F]    recompute the audit table's hash chains (exit 1 if
                                            a row was edited, deleted, reordered or inserted)
    bookstream report [--run ID] --out F    one self-contained HTML report of a recorded run
    bookstream verify-book --binance F...   rebuild the book from files, compare with ground truth
    bookstream demo                         the whole pipeline on the shipped sample (or --lobster /
                                            --binance files), summary as the last JSON line
    bookstream submit [--parallelism N]     the stream job on the Flink session cluster (flink run;
                      [--from-savepoint P]  make cluster-up), restored from a savepoint
    bookstream jobs                         the cluster's jobs and their states
    bookstream savepoint JOB                a savepoint of a running job (it keeps running)
    bookstream stop JOB [--savepoint]       stop a job, with a savepoint to resume from
    bookstream model status|canary|promote|rollback [NAME]
                                            the model registry: live model, canary and share

Commands that produce a result print it as one JSON object on the last line of stdout.
An expected error (a bad setting, a stopped broker, a missing file, a bad SQL statement) is one
line on stderr naming the problem and the fix, exit status 2; ``-v`` shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from udfs.config import PROJECT_ROOT, ConfigError, load_config, secure_state_dir
from udfs.kafka_acl import ADMIN

if TYPE_CHECKING:  # imported where used: the command starts without the adapters
    from udfs.config import Config
    from udfs.market.adapters.sources import Source

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


def _exchange_time(text: str) -> int:
    """An option's time, ISO-8601 (UTC when no zone) or integer nanoseconds, as ns."""
    from jobs.training_set import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither ISO-8601 (2012-06-21T13:30, UTC when no zone) nor integer ns"
        ) from None


def _add_window_args(
    parser: argparse.ArgumentParser,
    *,
    required: bool = False,
    exclusive: bool = True,
    context: str = "",
) -> None:
    """``--from``/``--to``: a window of exchange time, parsed to ns (``time_from``/``time_to``,
    None when not given); ``context`` prefixes the help (``with drift: ``)."""
    parser.add_argument(
        "--from",
        dest="time_from",
        type=_exchange_time,
        required=required,
        metavar="T",
        help=f"{context}window start, exchange time: ISO-8601 (UTC) or ns",
    )
    parser.add_argument(
        "--to",
        dest="time_to",
        type=_exchange_time,
        required=required,
        metavar="T",
        help=f"{context}window end, {'exclusive' if exclusive else 'inclusive'}",
    )


def _add_loop_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop",
        type=int,
        default=1,
        metavar="N",
        help="send the source N times over, each pass a later day of the same market (times "
        "and sequence numbers moved forward); 0: until stopped (default 1)",
    )


def _source(args: argparse.Namespace) -> Source:
    from udfs.market.adapters.sources import Source

    if not args.lobster and not args.binance:
        return Source.sample()
    return Source(lobster=[tuple(p) for p in args.lobster], binance=list(args.binance))


def _emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, separators=(",", ":"), default=str), flush=True)


def _check_broker() -> None:
    """Refuse to start when the configured broker does not answer (a job would otherwise
    wait for it forever, its clients logging connection errors)."""
    from jobs.kafka_io import check_broker

    check_broker(load_config())


def cmd_doctor(args: argparse.Namespace) -> int:
    from jobs.doctor import run_doctor

    ok, report = run_doctor(load_config(), need_broker=not args.offline)
    _emit(report)
    return 0 if ok else 1


def cmd_feast_env(_args: argparse.Namespace) -> int:
    from jobs.feast_store import feast_env_shell

    print(feast_env_shell(load_config()))
    return 0


def cmd_feast_export(_args: argparse.Namespace) -> int:
    from jobs.feast_store import export_offline

    _emit(export_offline(load_config()))
    return 0


def cmd_feast_push(args: argparse.Namespace) -> int:
    from jobs.feast_store import run_pusher

    _emit(run_pusher(load_config(), bounded=args.bounded, trace=args.trace))
    return 0


def cmd_training_set(args: argparse.Namespace) -> int:
    from jobs.training_set import TrainingSetRequest, build_training_set

    request = TrainingSetRequest(
        start_ns=args.time_from,
        end_ns=args.time_to,
        mode="event_time" if args.event_time else "as_known_at",
        step_ms=args.step_ms,
        views=tuple(args.view) if args.view else TrainingSetRequest.views,
        chunk_s=TrainingSetRequest.chunk_s if args.chunk_s is None else args.chunk_s,
    )
    started = time.perf_counter()
    summary = build_training_set(load_config(), request, args.out)
    seconds = round(time.perf_counter() - started, 3)  # printed only: the file has no clock
    _emit({**{k: v for k, v in summary.items() if k != "feature_views"}, "seconds": seconds})
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from jobs.train import TrainRequest, train

    request = TrainRequest(
        start_ns=args.time_from,
        end_ns=args.time_to,
        name=args.name,
        out_dir=args.out_dir,
        step_ms=args.step_ms,
        horizon_ms=args.horizon_ms,
        folds=args.folds,
        embargo=args.embargo,
    )
    _emit(train(load_config(), request))
    return 0


def cmd_portfolio_hrp(args: argparse.Namespace) -> int:
    from jobs.portfolio_hrp import hrp_from_lake

    _emit(
        hrp_from_lake(
            load_config(),
            args.out,
            start_ns=args.time_from,
            end_ns=args.time_to,
            bar_ms=args.bar_ms,
            align=args.align,
        )
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from udfs.config import effective_settings, load_config_with_origins

    cfg, origins = load_config_with_origins()
    values = effective_settings(cfg)
    if args.json:
        _emit({key: {"value": v, "from": origins[key]} for key, v in values.items()})
        return 0
    # TOML with the origin of each value as a comment: it can be saved as bookstream.toml
    section = ""
    for key, value in values.items():
        head, _, name = key.rpartition(".")
        if head != section:
            print(f"\n[{head}]")
            section = head
        text = json.dumps(str(value) if isinstance(value, Path) else value)
        if isinstance(value, dict):  # a TOML inline table (kafka.client, secrets masked)
            text = "{" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
            text += "}"
        print(f"{name or key} = {text}  # {origins[key]}")
    return 0


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
    source = _source(args)
    source.check_files()
    create_topics(cfg)
    res = publish(
        cfg,
        source,
        speed=args.speed,
        progress=False if args.no_progress else None,
        loops=args.loop,
    )
    _emit(
        {
            "events_in": res.events_in,
            "published": res.published,
            "dead_lettered": res.dead_lettered,
            "wall_s": round(res.wall_s, 3),
            "events_per_s": round(res.rate, 1),
            **res.problems,
        }
    )
    if args.wait:  # supervised (bookstream live): one process ending would stop the others
        from jobs.stopping import StopFlag

        stop = StopFlag("publisher")
        restore = stop.install()
        while not stop.stop:
            time.sleep(0.2)
        restore()
    return 1 if res.problems else 0


def cmd_tail(args: argparse.Namespace) -> int:
    from jobs.tail import tail

    last = None if args.from_beginning else args.lines
    tail(load_config(), args.topic, last=last, follow=args.follow)
    return 0


def cmd_page(args: argparse.Namespace) -> int:
    from jobs.live_page import run_page

    run_page(load_config(), port=args.port)
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from jobs.live import run_live

    return run_live(
        load_config(),
        _source(args),
        speed=args.speed,
        loops=args.loop,
        print_procfile=args.procfile,
    )


def cmd_stream_job(args: argparse.Namespace) -> int:
    from jobs.stream_job import run_stream_job

    run_stream_job(
        load_config(),
        bounded=args.bounded,
        group_id=args.group_id,
        restore=args.restore,
        restore_latest=args.restore_latest,
        from_start=args.from_start,
        start_offsets=args.start_offsets,
    )
    return 0


def cmd_exec_sink(args: argparse.Namespace) -> int:
    from jobs.execution_sink import TransactionStuckError, run_sink

    try:
        res = run_sink(load_config(), group=args.group_id, bounded=args.bounded)
    except TransactionStuckError as exc:
        # a thread is stuck inside librdkafka: no clean shutdown can join it
        print(f"bookstream exec-sink: error: {exc}", file=sys.stderr, flush=True)
        os._exit(3)
    _emit(
        {
            "inputs": res.inputs,
            "outputs": res.outputs,
            "skipped": res.skipped,
            "rebuilt_inputs": res.rebuilt_inputs,
            **res.stats,
            "positions": res.positions,
            "pnl": res.pnl,
        }
    )
    return 0


def cmd_history_sink(args: argparse.Namespace) -> int:
    from jobs.history_sink import run_history_sink

    res = run_history_sink(load_config(), bounded=args.bounded, only=args.only)
    _emit(
        {
            "rows": res.rows,
            "total_rows": res.total_rows,
            "audit_rows": res.audit_rows,
            "dead_lettered": res.dead_lettered,
            "commits": res.commits,
            "lost_to_retention": res.lost_to_retention,
            "wall_s": round(res.wall_s, 3),
            "rows_per_s": round(res.total_rows / res.wall_s, 1) if res.wall_s else None,
        }
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from jobs.replay import run_from_args

    summary = run_from_args(args)
    _emit(summary)
    return 1 if summary.get("identical") is False else 0


def cmd_report(args: argparse.Namespace) -> int:
    from jobs.report import write_report

    _emit(write_report(load_config(), Path(args.out), args.run))
    return 0


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


def cmd_audit(args: argparse.Namespace) -> int:
    from jobs.audit import audit_head, verify_audit

    if args.action == "head":
        _emit(audit_head(load_config()))
        return 0
    verdict = verify_audit(load_config(), args.anchor)
    _emit(verdict)
    return 0 if verdict["ok"] else 1


def cmd_verify_book(args: argparse.Namespace) -> int:
    if bool(args.lobster) == bool(args.binance):
        raise UsageError(
            "give exactly one of --lobster MESSAGE_FILE ORDERBOOK_FILE or --binance FILE [FILE...]"
        )
    _source(args).check_files()
    if args.lobster:
        from udfs.market.adapters.lobster import verify_lobster

        message_file, orderbook_file = args.lobster[0]
        result: dict[str, Any] = dict(verify_lobster(message_file, orderbook_file))
    else:
        from udfs.market.adapters.binance import verify_binance

        result = dict(verify_binance(args.binance[0]))
    mismatches = result.pop("mismatches", [])
    for m in mismatches:
        print(f"mismatch: {json.dumps(m, default=str)}", file=sys.stderr)
    result.pop("book_error_samples", None)
    _emit(result)
    return 0 if result["matched"] == result["checked"] else 1


def _partition_offsets(text: str) -> dict[int, int]:
    """``0:15,1:0,2:7`` -> {0: 15, 1: 0, 2: 7}."""
    try:
        pairs = [item.split(":") for item in text.split(",") if item]
        return {int(p): int(o) for p, o in pairs}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PARTITION:OFFSET,...") from exc


def cmd_demo(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    if args.parallelism is not None and not args.cluster:
        raise UsageError("--parallelism goes with --cluster (a local run takes flink.parallelism)")
    summary = run_demo(
        load_config(),
        _source(args),
        speed=args.speed,
        progress=False if args.no_progress else None,
        cluster=args.cluster,
        parallelism=args.parallelism,
    )
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}", file=sys.stderr)
    _emit(summary)
    return 0 if summary["reconciled"] else 1


def cmd_submit(args: argparse.Namespace) -> int:
    from jobs.cluster import submit

    cfg = load_config()
    job_args = ["--group-id", args.group_id]
    if args.bounded:
        job_args.append("--bounded")
    if args.from_start:
        job_args.append("--from-start")
    done = submit(cfg, job_args, parallelism=args.parallelism, from_savepoint=args.from_savepoint)
    _emit(
        {
            "job_id": done.job_id,
            "parallelism": args.parallelism,
            "from_savepoint": args.from_savepoint,
            "group_id": args.group_id,
            "web_ui": f"{cfg.flink_cluster_rest_url}/#/job/running/{done.job_id}/overview",
        }
    )
    return 0


def cmd_jobs(_args: argparse.Namespace) -> int:
    from jobs.cluster import list_jobs

    cfg = load_config()
    _emit({"cluster": cfg.flink_cluster_rest_url, "jobs": list_jobs(cfg)})
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    """The model registry: show it, or make one change and show the result."""
    from udfs.config import PROJECT_ROOT
    from udfs.strategy.registry import Registry

    cfg = load_config()
    path = cfg.model_registry_path
    reg = Registry.load(path, live=cfg.strategy.model_path, canary=cfg.strategy.shadow_model_path)
    if args.action == "status":
        _emit({"registry": str(path), **reg.view()})
        return 0
    if args.action == "drift":
        return _model_drift(args, cfg, reg)
    if not args.name:
        raise UsageError(f"`bookstream model {args.action}` needs a model NAME")
    model = f"models/{args.name}.onnx"
    if not (PROJECT_ROOT / model).is_file():
        raise FileNotFoundError(f"no model {args.name}: {PROJECT_ROOT / model} does not exist")
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.action == "canary":
        if args.share is None:
            raise UsageError("`bookstream model canary NAME` needs --share X (0 to 1)")
        new = reg.with_canary(model, args.share, at)
    elif args.action == "promote":
        new = reg.promote(args.name, at)
    else:
        new = reg.rollback(args.name, at)
    new.save(path)
    _emit(
        {
            "registry": str(path),
            "action": args.action,
            **new.view(),
            "previous_live": reg.view()["live"],
            "takes_effect": "at the stream job's next start (stream-job --restore-latest keeps "
            "its state)",
        }
    )
    return 0


def _model_drift(args: argparse.Namespace, cfg: Config, reg: Any) -> int:
    from jobs.drift import check_drift
    from udfs.strategy.registry import model_name

    name = args.name or model_name(reg.live)
    if (args.time_from is None) != (args.time_to is None):
        raise UsageError("give both --from and --to, or neither (the whole lake)")
    start = 0 if args.time_from is None else args.time_from
    end = 2**63 - 1 if args.time_to is None else args.time_to
    reference = None
    if args.reference_from is not None or args.reference_to is not None:
        if args.reference_from is None or args.reference_to is None:
            raise UsageError("give both --reference-from and --reference-to")
        reference = (args.reference_from, args.reference_to)
    summary = check_drift(cfg, name, start, end, reference, args.instrument)
    _emit(summary)
    return 1 if summary["alert"] else 0


def cmd_savepoint(args: argparse.Namespace) -> int:
    from jobs.cluster import savepoint

    _emit(savepoint(load_config(), args.job_id, args.target_dir))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from jobs.cluster import stop_job

    _emit(
        stop_job(load_config(), args.job_id, with_savepoint=args.savepoint, target=args.target_dir)
    )
    return 0


def _add_cluster_commands(sub: argparse._SubParsersAction, common: tuple) -> None:
    p = _command(
        sub,
        "submit",
        "submit the stream job to the Flink session cluster with flink run (make cluster-up)",
        "bookstream submit --parallelism 2 --from-savepoint file:///.../savepoint-1a2b3c-0123",
        cmd_submit,
        description="Runs the wheel's `flink run -d -p N [-s PATH] -C <jars> -py "
        "jobs/stream_job.py -pyfs <udfs+jobs zip> ARGS` against the cluster's configuration "
        "(<state>/flink-cluster/conf): parallelism, checkpoint storage, restart strategy and "
        "memory come from it and from Flink's options, not from the job's code.",
        parents=common,
    )
    p.add_argument("--parallelism", "-p", type=int, default=None, help="default: the cluster's")
    p.add_argument(
        "--from-savepoint", "-s", metavar="PATH", help="a savepoint (or retained checkpoint) URI"
    )
    p.add_argument("--group-id", default="bookstream-features", help="Kafka consumer group")
    p.add_argument(
        "--bounded", action="store_true", help="stop at the events topic's end as of the start"
    )
    p.add_argument(
        "--from-start",
        action="store_true",
        help="without a savepoint: rebuild the books from the events topic's first offset",
    )
    _command(
        sub,
        "jobs",
        "list the session cluster's jobs (id, name, state)",
        "bookstream jobs",
        cmd_jobs,
        parents=common,
    )
    p = _command(
        sub,
        "savepoint",
        "take a savepoint of a running job on the cluster (the job keeps running)",
        "bookstream savepoint 0656f7c526b4032728f2d45261f36d62",
        cmd_savepoint,
        parents=common,
    )
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("--target-dir", metavar="URI", help="default: flink.savepoint_dir")
    p = _command(
        sub,
        "stop",
        "stop a job on the cluster: with --savepoint (resumable), else cancel",
        "bookstream stop 0656f7c526b4032728f2d45261f36d62 --savepoint",
        cmd_stop,
        parents=common,
    )
    p.add_argument("job_id", metavar="JOB")
    p.add_argument(
        "--savepoint",
        action="store_true",
        help="stop with a savepoint (no drain): submit --from-savepoint continues exactly there",
    )
    p.add_argument("--target-dir", metavar="URI", help="default: flink.savepoint_dir")


class UsageError(ValueError):
    """The command's arguments do not fit together; the message says how they should."""


def _package_version() -> str:
    try:
        return version("bookstream")
    except PackageNotFoundError:
        return "unknown (not installed: `make install`)"


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    example: str,
    func: Callable[[argparse.Namespace], int] | None,
    *,
    description: str = "",
    aliases: tuple[str, ...] = (),
    parents: tuple[argparse.ArgumentParser, ...] = (),
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` has a description and an example; ``func`` runs it (None:
    a group's, whose required COMMAND sets the function)."""
    p = sub.add_parser(
        name,
        aliases=list(aliases),
        help=summary,
        description=f"{summary}.{chr(10) * 2 + description if description else ''}",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )
    if func is not None:
        p.set_defaults(func=func)
    return p


def _group(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    example: str,
    *,
    parents: tuple[argparse.ArgumentParser, ...] = (),
) -> argparse._SubParsersAction:
    """A command of commands (``bookstream NAME COMMAND``): its ``--help`` lists them; returns
    the action to add them to (each with ``_command``, which sets the function to run)."""
    p = _command(sub, name, summary, example, None, parents=parents)
    return p.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def build_parser() -> argparse.ArgumentParser:
    # -v before or after the subcommand; SUPPRESS: the subcommand's default never overrides
    # a -v given before it
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging, and the traceback of an error",
    )
    parser = argparse.ArgumentParser(
        prog="bookstream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[verbose],
    )
    parser.add_argument("--version", action="version", version=f"bookstream {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = (verbose,)

    p = _command(
        sub,
        "doctor",
        "check Java, jars, Flink/connector versions, broker, topics; say where the logs are",
        "bookstream doctor --offline",
        cmd_doctor,
        parents=common,
    )
    p.add_argument("--offline", action="store_true", help="skip the broker and topic checks")

    _command(
        sub,
        "feast-env",
        "print the variables feature_repo/feature_store.yaml expands, as shell exports",
        'bookstream feast-env  # then: eval "$(bookstream feast-env)"; feast -c feature_repo apply',
        cmd_feast_env,
        description="The Redis password is read from its file by the shell ($(cat ...)), "
        "never printed.",
        parents=common,
    )
    _command(
        sub,
        "feast-export",
        "write the lake's features table at its current snapshot as Feast's offline Parquet",
        "bookstream feast-export",
        cmd_feast_export,
        description="<state>/feast/offline/features.parquet, with the Iceberg snapshot id "
        "beside it (features.snapshot.json).",
        parents=common,
    )
    p = _command(
        sub,
        "feast-push",
        "push the features topic to Feast's online store (Redis) through Feast's push API",
        "bookstream feast-push --bounded",
        cmd_feast_push,
        parents=common,
    )
    p.add_argument(
        "--bounded",
        action="store_true",
        help="read up to the topic's end offsets as of the start, then stop",
    )
    p.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="following: one JSON line per push into FILE (its stamps, for `make bench`)",
    )

    features_sub = _group(
        sub,
        "features",
        "quants' feature-store commands (see `bookstream features training-set --help`)",
        "bookstream features training-set --from 2012-06-21T13:30 --to 2012-06-21T13:31 "
        "--out train.parquet",
        parents=common,
    )
    p = _command(
        features_sub,
        "training-set",
        "a point-in-time training set from the lake through Feast's get_historical_features",
        "bookstream features training-set --from 2012-06-21T13:30 --to 2012-06-21T13:31 "
        "--out train.parquet",
        cmd_training_set,
        description="Entity rows: per instrument, a grid every --step-ms of exchange time "
        "over its feature rows inside [--from, --to). Joined as known at each entity row "
        "(the feature row's availability time: exchange time + modelled feed and processing "
        "latency) or, with --event-time, on the exchange time. The Parquet file keeps the "
        "lake snapshot id, the feature views' versions and the entity rows' timestamps; "
        "entity rows with no value inside a view's TTL are kept (nulls) and counted.",
        parents=common,
    )
    _add_window_args(p, required=True)
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--as-known-at",
        action="store_true",
        help="join on availability time (default): what the live path could have known",
    )
    when.add_argument(
        "--event-time", action="store_true", help="join on exchange time (look-ahead, to compare)"
    )
    p.add_argument("--step-ms", type=int, default=1000, help="entity grid step (default 1000)")
    p.add_argument(
        "--chunk-s",
        type=int,
        default=None,
        help="join the entity rows per this many seconds of event time, each chunk with only "
        "the feature rows it can use (default: TrainingSetRequest.chunk_s, 600; 0: one "
        "get_historical_features call for the whole window, memory grows with entity rows x "
        "feature rows); the same bytes either way",
    )
    p.add_argument(
        "--view",
        action="append",
        metavar="NAME",
        help="a feature view (repeatable; default book_features and window_features)",
    )
    p.add_argument("--out", type=Path, required=True, help="the Parquet file to write")

    p = _command(
        sub,
        "train",
        "train a model from the lake through Feast: label, validate, export ONNX + model card",
        "bookstream train --from 2012-06-21T13:30 --to 2012-06-21T13:31 --step-ms 100",
        cmd_train,
        description="The training set as known at each entity row (bookstream features "
        "training-set), triple-barrier labels on the lake's exact mid path, purged K-fold "
        "over a grid of regularisation strengths with the deflated Sharpe ratio of the one "
        "selected, logistic regression exported to <out-dir>/<name>.onnx with its model card "
        "<name>.json (features and order, window, lake snapshot, scores, hashes). Last line: "
        "JSON with rows, features, folds, deflated_sharpe, model, onnx_equals_offline.",
        parents=common,
    )
    _add_window_args(p, required=True)
    p.add_argument("--name", default="book_lr_feast", help="model name (default book_lr_feast)")
    p.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "models", help="default models/")
    p.add_argument("--step-ms", type=int, default=250, help="entity grid step (default 250)")
    p.add_argument("--horizon-ms", type=int, default=2000, help="vertical barrier (default 2000)")
    p.add_argument("--folds", type=int, default=5, help="purged K-fold folds (default 5)")
    p.add_argument("--embargo", type=int, default=5, help="embargo, samples (default 5)")

    portfolio_sub = _group(
        sub,
        "portfolio",
        "portfolio construction from the lake (see `bookstream portfolio hrp --help`)",
        "bookstream portfolio hrp --bar-ms 1000 --out weights.json",
        parents=common,
    )
    p = _command(
        portfolio_sub,
        "hrp",
        "hierarchical risk parity weights across instruments from the lake's mid returns",
        "bookstream portfolio hrp --bar-ms 1000 --out weights.json",
        cmd_portfolio_hrp,
        description="Log returns of each instrument's mid (lake features table, current "
        "snapshot) on a --bar-ms grid where every instrument has a price, HRP with "
        "skfolio's defaults; --out is the file sizing.capital_weights_path reads "
        "(BOOKSTREAM_SIZING_CAPITAL_WEIGHTS_PATH). Last line: JSON with the weights.",
        parents=common,
    )
    _add_window_args(p, exclusive=False)
    p.add_argument("--bar-ms", type=int, default=1000, help="return bar (default 1000)")
    p.add_argument(
        "--align",
        choices=("time", "start"),
        default="time",
        help="time: one exchange-time grid where all have prices (default); start: each "
        "instrument from its own first row (histories of different days)",
    )
    p.add_argument("--out", type=Path, required=True, help="the weights JSON to write")

    p = _command(
        sub,
        "config",
        "print the effective configuration and where each value came from",
        "BOOKSTREAM_KAFKA_PORT=29092 bookstream config",
        cmd_config,
        description="Values come from the defaults, then the TOML file ($BOOKSTREAM_CONFIG or "
        "./bookstream.toml), then BOOKSTREAM_<SECTION>_<FIELD> environment variables; the "
        "output is TOML with each value's origin as a comment.",
        parents=common,
    )
    p.add_argument("--json", action="store_true", help="one JSON object: key -> value, from")

    _command(
        sub,
        "topics",
        "create the configured topics (idempotent) and list them",
        "bookstream topics",
        cmd_topics,
        parents=common,
    )

    p = _command(
        sub,
        "publish",
        "publish a source's L2 events to the events topic",
        "bookstream publish --lobster MSG.csv OB.csv --speed 10",
        cmd_publish,
        parents=common,
    )
    _add_source_args(p)
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="replay at N x the recorded pace (default: as fast as possible)",
    )
    _add_loop_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--wait",
        action="store_true",
        help="after the source ends, stay until SIGTERM/SIGINT (for a supervisor)",
    )

    p = _command(
        sub,
        "live",
        "run the pipeline live: paced publisher, stream job, execution and history sinks, "
        "supervised, on a topic set of the session's own, until Ctrl-C or `make stop`",
        "bookstream live --speed 5",
        cmd_live,
        parents=common,
    )
    _add_source_args(p)
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="publish at N x the recorded pace (default 1: as recorded)",
    )
    _add_loop_arg(p)
    p.add_argument(
        "--procfile", action="store_true", help="print the session as a Procfile and exit"
    )

    p = _command(
        sub,
        "tail",
        "print a topic's records decoded, one JSON object per line (bad ones with their reason)",
        "bookstream tail orders --from-beginning",
        cmd_tail,
        parents=common,
    )
    p.add_argument("topic", help="a topic name, or its [topics] field: events, orders, ...")
    p.add_argument("-n", "--lines", type=int, default=10, help="last N records per partition")
    p.add_argument("--from-beginning", action="store_true", help="every record from the first")
    p.add_argument("-f", "--follow", action="store_true", help="then keep printing new ones")

    p = _command(
        sub,
        "page",
        "serve the live desk page: orders, fills, positions, PnL, risk mode, latencies "
        "(Server-Sent Events)",
        "bookstream page --port 19480",
        cmd_page,
        parents=common,
    )
    p.add_argument("--port", type=int, default=None, help="default: [metrics] page_port")

    p = _command(
        sub,
        "stream-job",
        "run the Flink stream job (Kafka -> book, features, signals, orders -> Kafka)",
        "bookstream stream-job --restore-latest",
        cmd_stream_job,
        aliases=("run-job",),
        parents=common,
    )
    p.add_argument(
        "--bounded",
        action="store_true",
        help="stop at the events topic's current end (default: run until killed)",
    )
    p.add_argument(
        "--group-id",
        default="bookstream-features",
        help="Kafka consumer group; offsets are committed on checkpoints",
    )
    p.add_argument("--restore", type=Path, metavar="CHECKPOINT", help="a chk-N directory")
    p.add_argument(
        "--restore-latest",
        action="store_true",
        help="resume from the newest retained checkpoint of this group, if any",
    )
    p.add_argument(
        "--from-start",
        action="store_true",
        help="without a checkpoint: rebuild the books from the events topic's first offset",
    )
    p.add_argument(
        "--start-offsets",
        type=_partition_offsets,
        metavar="P:O,...",
        help="start at these offsets of the events topic (no state restored; the demo's own run)",
    )

    p = _command(
        sub,
        "exec-sink",
        "run the execution sink (orders -> risk -> paper venue -> executions)",
        "bookstream exec-sink --bounded",
        cmd_exec_sink,
        parents=common,
    )
    p.add_argument(
        "--bounded",
        action="store_true",
        help="stop at the inputs' current end (default: run until killed)",
    )
    p.add_argument("--group-id", default="bookstream-exec-sink")

    p = _command(
        sub,
        "history-sink",
        "store every topic in its Iceberg table (offsets in the snapshot: exactly once)",
        "bookstream history-sink --bounded --only events orders",
        cmd_history_sink,
        parents=common,
    )
    p.add_argument(
        "--bounded",
        action="store_true",
        help="stop once every topic is stored up to its current end",
    )
    p.add_argument("--only", nargs="+", metavar="TABLE", help="only these tables")

    p = _command(
        sub,
        "replay",
        "replay recorded events from Iceberg through the same job and execution sink",
        "bookstream replay --run latest --verify",
        cmd_replay,
        description="--verify compares with the live run (JSON: orders_live, orders_replayed, "
        "orders_identical, fills_live, fills_identical, first_divergence).",
        parents=common,
    )
    p.add_argument(
        "--run", default=None, help="a recorded run id, or 'latest' (default, unless --from/--to)"
    )
    _add_window_args(p)
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

    p = _command(
        sub,
        "report",
        "one self-contained HTML report of a recorded run, from the lake",
        "bookstream report --run latest --out report.html",
        cmd_report,
        description="KPIs (PnL, Sharpe, Sortino, drawdown, hit ratio, turnover, slippage, fill "
        "and reject rates, latency, feature freshness, energy), equity and drawdown curves, TCA, "
        "fill latency, spread and depth by hour, data quality per minute, the replay verdict. "
        "JSON last line: run_id, out, kpis.",
        parents=common,
    )
    p.add_argument("--run", default="latest", help="a recorded run id, or 'latest' (default)")
    p.add_argument("--out", default="report.html", help="the HTML file to write")

    p = _command(
        sub,
        "sql",
        "ClickHouse SQL (chDB) over the Iceberg history: a file of sql/, a path or a query",
        "bookstream sql ohlcv_1m --format csv",
        cmd_sql,
        description="--list shows the library of sql/*.sql and what each answers.",
        parents=common,
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

    p = _command(
        sub,
        "audit",
        "verify the hash-chained audit table (orders, risk decisions, kill switches, "
        "configurations), or print its heads",
        "bookstream audit verify",
        cmd_audit,
        description="verify: recompute every chain of the lake's audit table and check it "
        "against the heads committed with it, the anchor file and --anchor; the last line is "
        "JSON (ok, rows, chain, first_bad_seq, reason: edited / deleted / reordered / "
        "inserted); exit status 1 when a chain is broken. head: the heads to keep elsewhere "
        "(give them back with verify --anchor FILE).",
        parents=common,
    )
    p.add_argument("action", choices=("verify", "head"))
    p.add_argument(
        "--anchor",
        type=Path,
        metavar="FILE",
        help="a copy of `audit head` (or of the anchor file) kept elsewhere: each head in it "
        "must still be a row of its chain",
    )

    p = _command(
        sub,
        "verify-book",
        "rebuild the book from files and compare it with the ground truth they carry",
        "bookstream verify-book --lobster MSG.csv OB.csv",
        cmd_verify_book,
        parents=common,
    )
    _add_source_args(p, required=True)

    p = _command(
        sub,
        "demo",
        "publish -> Flink job -> execution sink -> history, on the shipped sample or your files",
        "bookstream demo --binance data/binance/usdm_sample.jsonl",
        cmd_demo,
        description="The summary (counts that reconcile, P&L) is the last line, as JSON.",
        parents=common,
    )
    _add_source_args(p)
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="publish at N x the recorded pace (default: as fast as possible)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--cluster",
        action="store_true",
        help="run the stream job on the Flink session cluster (make cluster-up), not a local "
        "MiniCluster",
    )
    p.add_argument(
        "--parallelism", "-p", type=int, default=None, help="with --cluster: the job's parallelism"
    )
    _add_cluster_commands(sub, common)

    p = _command(
        sub,
        "model",
        "the model registry: which ONNX model is live, which is the canary and its share",
        "bookstream model canary book_lr_v2 --share 0.2; bookstream model promote book_lr_v2",
        cmd_model,
        description="status: the registry. canary NAME --share X: models/NAME.onnx trades X of "
        "the instruments the model trades (by a stable hash; 0: scored and recorded only). "
        "promote NAME: the canary becomes live, the live model the canary at share 0. rollback "
        "NAME: a model that was live before is live again. A change takes effect at the stream "
        "job's next start; with --restore-latest its state (each model's, by name) is kept. "
        "drift [NAME] [--from T --to T]: population stability index of each feature of NAME "
        "(default: the live model) against its training distribution, a row per feature in "
        "the lake table model_drift; exit 1 when one is above strategy.drift_psi_alert.",
        parents=common,
    )
    p.add_argument("action", choices=("status", "canary", "promote", "rollback", "drift"))
    p.add_argument("name", nargs="?", metavar="NAME", help="a model in models/ (its file stem)")
    p.add_argument("--share", type=float, default=None, help="with canary: 0 to 1")
    _add_window_args(p, context="with drift: ")
    p.add_argument(
        "--reference-from",
        type=_exchange_time,
        metavar="T",
        help="with drift: a lake window as the reference (models without a drift_reference)",
    )
    p.add_argument(
        "--reference-to", type=_exchange_time, metavar="T", help="with drift: its end, exclusive"
    )
    p.add_argument(
        "--instrument",
        help="with drift: this instrument's rows only (a stream drift row's window)",
    )
    return parser


def _expected_error(exc: BaseException) -> str | None:
    """The one-line message (problem and fix) of an error a user can fix, else None."""
    from jobs.kafka_io import BrokerUnavailableError

    fixes: list[tuple[type[BaseException], str]] = [
        (
            ConfigError,
            "correct it in the file or the environment; `bookstream config` shows every "
            "value and where it came from",
        ),
        # its message says already how to start it
        (BrokerUnavailableError, ""),
        (FileNotFoundError, "check the path"),
        (UsageError, "see --help"),
    ]
    # a start that would compute from a wrong state: the message says why and what to do
    for module, name in (
        ("jobs.stream_job", "StartRefusedError"),
        ("jobs.execution_sink", "SinkStateError"),
        ("jobs.tail", "TopicNotFoundError"),
        ("jobs.cluster", "ClusterError"),
        ("udfs.strategy.registry", "RegistryError"),
        ("jobs.training_set", "TrainingSetError"),
        ("jobs.portfolio_hrp", "PortfolioError"),
        ("jobs.drift", "DriftError"),
    ):
        if module in sys.modules:
            fixes.append((getattr(sys.modules[module], name), ""))
    sql = sys.modules.get("jobs.sql")  # only a command that imported it can raise its error
    if sql is not None:
        fixes.append(
            (sql.SqlError, "correct the statement; `bookstream sql --list` shows the library")
        )
    for kind, fix in fixes:
        if isinstance(exc, kind):
            message = " ".join(str(exc).split())  # one line
            return f"{message} -- fix: {fix}" if fix else message
    return None


def _kafka_role(func: Any) -> str:
    """The Kafka principal a command connects as (``kafka.security = "sasl"``,
    udfs/kafka_acl.py); commands that create topics or run every stage in one process (demo,
    replay, bench, topics...) are the super user's."""
    roles: dict[Any, str] = {
        cmd_publish: "publisher",
        cmd_stream_job: "job",
        cmd_submit: "job",
        cmd_exec_sink: "exec-sink",
        cmd_history_sink: "history-sink",
        cmd_tail: "reader",
        cmd_page: "reader",
        cmd_feast_push: "reader",
    }
    return roles.get(func, ADMIN)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # PyFlink's Beam layer logs chatter at INFO
    for noisy in ("apache_beam", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with contextlib.suppress(ConfigError):  # a bad config is the command's own error to report
        secure_state_dir(load_config())
    from jobs.kafka_io import set_process_role

    set_process_role(_kafka_role(args.func))
    try:
        if args.func not in (
            cmd_doctor,
            cmd_config,
            cmd_sql,
            cmd_audit,
            cmd_report,
            cmd_verify_book,
            cmd_feast_env,
            cmd_feast_export,
            cmd_training_set,
            cmd_train,
            cmd_jobs,
            cmd_savepoint,
            cmd_stop,
        ):
            _check_broker()  # before any client of a stopped broker logs or waits forever
        return int(args.func(args) or 0)
    except Exception as exc:
        line = _expected_error(exc)
        if line is None:
            raise
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (-v: traceback)"
        print(f"bookstream {args.command}: error: {line}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
