"""`slatewise-client`: recommend, feedback, model (hot-swap), health (and loadtest) from a shell."""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf import json_format

from slatewise_client.client import SlateClient, tls_credentials
from slatewise_client.errors import field_violations
from slatewise_client.pb import slate_pb2 as pb
from slatewise_client.requests import FEEDBACK_TYPES, build_event


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="localhost:50051",
                   help="HOST:PORT or a gRPC URI such as dns:///slatewise-headless:50051")
    p.add_argument("--token", default=None, help="bearer token, if the server requires one")
    p.add_argument("--tls-ca", default=None, help="PEM CA bundle: connect with TLS")
    p.add_argument("--tls-cert", default=None, help="PEM client certificate (mutual TLS)")
    p.add_argument("--tls-key", default=None, help="PEM client key (mutual TLS)")


def _client(args: argparse.Namespace) -> SlateClient:
    return SlateClient(args.target, token=args.token,
                       credentials=tls_credentials(args.tls_ca, args.tls_cert, args.tls_key))


def _to_json(message) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=False, indent=2)


def _item_line(item: pb.SlateItem) -> str:
    source = pb.ItemSource.Name(item.source).removeprefix("ITEM_SOURCE_")
    return (f"{item.position + 1:>2}. {item.item_id:<12} {item.category:<12} "
            f"{source:<8} score={item.score:.3f}  {item.title}")


def _summary(slate: pb.Slate) -> str:
    strategy = pb.Strategy.Name(slate.strategy).removeprefix("STRATEGY_")
    reason = pb.FallbackReason.Name(slate.fallback_reason).removeprefix("FALLBACK_REASON_")
    d, t = slate.diversity, slate.timings
    parts = [f"strategy={strategy}"]
    if slate.fallback_reason:
        parts.append(f"reason={reason}")
    parts += [
        f"ild={d.intra_list_diversity:.3f}",
        f"coverage={d.category_coverage:.2f}",
        f"first_item={t.time_to_first_item_seconds * 1000:.0f}ms",
        f"total={t.total_seconds * 1000:.0f}ms",
        f"model={slate.model_id or '-'}",
        f"catalogue_version={slate.catalogue_version}",
    ]
    return "  ".join(parts)


def cmd_recommend(args: argparse.Namespace) -> int:
    kwargs = dict(
        strategy=args.strategy,
        diversity=args.diversity,
        max_per_category=args.max_per_category,
        exclude_ids=args.exclude or (),
        candidates=args.candidate or (),
        temperature=args.temperature,
        seed=args.seed,
    )
    with _client(args) as client:
        if args.stream:
            for event in client.recommend_stream(args.query, args.k, deadline=args.deadline, **kwargs):
                if args.json:
                    print(json_format.MessageToJson(event, indent=None), flush=True)
                elif event.HasField("item"):
                    print(_item_line(event.item), flush=True)
                else:
                    print(_summary(event.slate), flush=True)
            return 0
        slate = client.recommend(args.query, args.k, deadline=args.deadline, **kwargs)
        if args.json:
            print(_to_json(slate))
        else:
            for item in slate.items:
                print(_item_line(item))
            print(_summary(slate))
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    """One event from flags, or many from a JSONL file (one event object per line)."""
    import json
    import uuid

    if args.file:
        events = []
        with open(args.file, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    events.append(build_event(
                        str(data["event_id"]), str(data["slate_id"]), str(data["type"]),
                        data.get("item_ids", ()), positions=data.get("positions", ()),
                        timestamp=float(data.get("timestamp", 0.0)), user_id=str(data.get("user_id", ""))))
                except (ValueError, KeyError, TypeError) as exc:
                    print(f"error: {args.file}:{n}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    return 2
    else:
        if not args.slate_id or not args.type:
            print("error: give --slate-id and --type, or --file", file=sys.stderr)
            return 2
        events = [build_event(args.event_id or uuid.uuid4().hex, args.slate_id, args.type, args.item or (),
                              user_id=args.user_id)]
    with _client(args) as client:
        resp = client.report_events(events, deadline=args.deadline)
    print(f"accepted {resp.accepted}, duplicates {resp.duplicates}")
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "load":
            if not args.path:
                print("error: model load needs a PATH", file=sys.stderr)
                return 2
            status = client.load_model(args.path, deadline=args.deadline, shadow_requests=args.shadow)
        elif args.action == "rollback":
            status = client.rollback_model(deadline=args.deadline)
        else:
            status = client.model_status(deadline=args.deadline)
    print(_to_json(status))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.health(args.service, deadline=args.deadline)
    print(status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slatewise-client", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("recommend", help="ask for one slate")
    _add_target(rec)
    rec.add_argument("--query", required=True, help="free-text intent, e.g. 'casual outfit'")
    rec.add_argument("-k", type=int, default=5, help="slate size")
    rec.add_argument("--stream", action="store_true", help="print items as they are decided")
    rec.add_argument("--deadline", type=float, default=None, help="seconds")
    rec.add_argument("--strategy", choices=["auto", "model", "pointwise"], default="auto")
    rec.add_argument("--diversity", type=float, default=0.0, help="0..1")
    rec.add_argument("--max-per-category", type=int, default=0)
    rec.add_argument("--exclude", action="append", help="item id to exclude (repeatable)")
    rec.add_argument("--candidate", action="append", help="catalogue id to choose from (repeatable)")
    rec.add_argument("--temperature", type=float, default=0.0)
    rec.add_argument("--seed", type=int, default=None)
    rec.add_argument("--json", action="store_true", help="protobuf JSON mapping of the response")
    rec.set_defaults(func=cmd_recommend)

    fb = sub.add_parser("feedback", help="report what a user did with a served slate")
    _add_target(fb)
    fb.add_argument("--slate-id", help="Slate.slate_id of the served slate")
    fb.add_argument("--type", choices=list(FEEDBACK_TYPES))
    fb.add_argument("--item", action="append", help="item id the event is about (repeatable)")
    fb.add_argument("--event-id", help="idempotency key (default: a new random id)")
    fb.add_argument("--user-id", default="")
    fb.add_argument("--file", help="JSONL of events (event_id, slate_id, type, item_ids, positions, "
                                   "timestamp, user_id), sent as one batch")
    fb.add_argument("--deadline", type=float, default=30.0)
    fb.set_defaults(func=cmd_feedback)

    model = sub.add_parser("model", help="the served model: status, load (hot-swap), rollback")
    _add_target(model)
    model.add_argument("action", choices=["status", "load", "rollback"])
    model.add_argument("path", nargs="?", help="model directory (load), under the server's model_swap_root")
    model.add_argument("--shadow", type=int, default=0, metavar="N",
                       help="load: first compare the candidate with the serving model on the latest N requests")
    model.add_argument("--deadline", type=float, default=600.0)
    model.set_defaults(func=cmd_model)

    health = sub.add_parser("health", help="grpc.health.v1 check")
    _add_target(health)
    health.add_argument("--service", default="", help="service name ('' = the whole server)")
    health.add_argument("--deadline", type=float, default=5.0)
    health.set_defaults(func=cmd_health)

    try:
        from slatewise_client.loadtest import add_parser as add_loadtest
    except ImportError:  # pragma: no cover - loadtest ships with the package
        pass
    else:
        add_loadtest(sub, _add_target)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        for field, description in field_violations(err):
            print(f"  {field}: {description}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
