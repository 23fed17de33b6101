"""`helpdesk` command: run the whole system locally, mint dev tokens, prepare a deployment.

helpdesk run                     # embedded PostgreSQL + Kafka + five services
helpdesk token --role agent      # last line: a bearer token the local stack accepts
helpdesk migrate [service ...]   # migrate existing databases (*_DATABASE_URL)
helpdesk topics                  # create the missing topics on KAFKA_BOOTSTRAP_SERVERS
                                 # (names prefixed with HELPDESK_TOPIC_PREFIX); exits 0 when
                                 # they exist already: a one-shot job before the services start
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaError

from helpdesk_runtime import paths
from helpdesk_runtime.kafka import KafkaBroker, MissingToolError, ensure_kafka_jars
from helpdesk_runtime.kafka_admin import KafkaNotReadyError, ensure_topics
from helpdesk_runtime.postgres import EmbeddedPostgres
from helpdesk_runtime.procs import ProcessStartError
from helpdesk_runtime.seed import DEMO_AGENTS, dev_token, seed_demo_data
from helpdesk_runtime.stack import SERVICE_BY_NAME, SERVICES, Stack, migrate_all, provision_databases
from helpdesk_shared.chassis.migrations import upgrade_database
from helpdesk_shared.chassis.settings import DEV_JWT_SECRET
from helpdesk_shared.contracts.enums import Role
from helpdesk_shared.contracts.topics import ALL_TOPICS


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _say(message: str) -> None:
    print(f"[helpdesk] {message}", flush=True)


def _database_urls_from_env() -> dict[str, str] | None:
    given = {s.name: os.environ[s.database_url_var] for s in SERVICES if os.environ.get(s.database_url_var)}
    if not given:
        return None
    missing = [s.database_url_var for s in SERVICES if s.name not in given]
    if missing:
        raise SystemExit(f"Set every service database URL or none; missing: {', '.join(missing)}")
    return given


def _topic_prefix() -> str:
    return os.environ.get("HELPDESK_TOPIC_PREFIX", "")


def _wanted_topics(prefix: str) -> dict[str, int]:
    """Every topic the services use, as the services name them (prefixed), with its partitions."""
    return {f"{prefix}{name}": partitions for name, partitions in ALL_TOPICS.items()}


def run(args: argparse.Namespace) -> int:
    secret = os.environ.get("HELPDESK_JWT_SECRET", DEV_JWT_SECRET)
    cleanups: list[Callable[[], Any]] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        database_urls = _database_urls_from_env()
        if database_urls is None:
            pg = EmbeddedPostgres(paths.pgdata_dir(), port=args.postgres_port)
            _say(f"starting embedded PostgreSQL on 127.0.0.1:{pg.port} (data in {pg.data_dir})")
            pg.start()
            cleanups.append(pg.stop)
            database_urls = provision_databases(pg.admin_url)
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            _say(f"Kafka jars in {paths.kafka_libs_dir()} (fetched with Maven on the first run)")
            libs = ensure_kafka_jars(paths.kafka_libs_dir())
            broker = KafkaBroker(
                paths.kafka_data_dir(), libs, port=args.kafka_port, controller_port=args.kafka_port + 1
            )
            _say(f"starting Kafka broker on {broker.bootstrap_servers}")
            broker.start()
            cleanups.append(broker.stop)
            bootstrap = broker.bootstrap_servers
        prefix = _topic_prefix()
        asyncio.run(ensure_topics(bootstrap, _wanted_topics(prefix)))
        _say("applying migrations")
        migrate_all(database_urls)
        stack = Stack(
            database_urls=database_urls,
            kafka_bootstrap=bootstrap,
            log_dir=paths.local_dir() / "logs",
            ports={s.name: _env_int(f"{s.name.upper()}_PORT", s.default_port) for s in SERVICES},
            jwt_secret=secret,
            topic_prefix=prefix,
        )
        cleanups.append(stack.stop)
        _say("starting services")
        stack.start(timeout=90)
        seed_demo_data(stack.url("routing"), jwt_secret=secret)
        _print_banner(stack, secret)
        while not stop.wait(1.0):
            for name, proc in stack.processes.items():
                if not proc.is_running():
                    _say(f"{name} exited ({proc.returncode}); see {proc.log_path}")
                    stop.set()
        _say("stopping")
        return 0
    except MissingToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ProcessStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as exc:
                print(f"warning: cleanup failed: {exc!r}", file=sys.stderr)


def _print_banner(stack: Stack, secret: str) -> None:
    rows = [(s.name, stack.url(s.name)) for s in SERVICES]
    print("\nHelpdesk is up (Ctrl-C stops everything):\n")
    print(f"  {'service':<10} {'URL':<24} docs")
    for name, url in rows:
        print(f"  {name:<10} {url:<24} {url}/docs")
    print("\nDemo team (make token ROLE=agent SUB=<id>):")
    for agent in DEMO_AGENTS:
        print(f"  {agent.id}  {agent.name}  {'/'.join(agent.roles)}")
    channel = dev_token(secret=secret, subject="demo-channel", roles=[Role.CHANNEL])
    admin = dev_token(secret=secret, subject="demo-admin", roles=[Role.ADMIN])
    print(f"\nchannel token: {channel}\nadmin token:   {admin}\n", flush=True)


def token(args: argparse.Namespace) -> int:
    secret = os.environ.get("HELPDESK_JWT_SECRET", DEV_JWT_SECRET)
    roles = [r.strip() for r in args.role.split(",") if r.strip()]
    unknown = [r for r in roles if r not in Role._value2member_map_]
    if not roles or unknown:
        print(
            f"error: unknown role(s) {unknown or roles}; choose from {', '.join(r.value for r in Role)}",
            file=sys.stderr,
        )
        return 2
    subject = args.sub or str(uuid.uuid4())
    print(dev_token(secret=secret, subject=subject, roles=roles, ttl_seconds=args.ttl))
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Apply migrations to existing databases named by the *_DATABASE_URL variables."""
    names = args.services or [s.name for s in SERVICES]
    unknown = [n for n in names if n not in SERVICE_BY_NAME]
    if unknown:
        print(f"error: unknown service(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    for name in names:
        spec = SERVICE_BY_NAME[name]
        url = os.environ.get(spec.database_url_var)
        if not url:
            print(f"error: {spec.database_url_var} is not set", file=sys.stderr)
            return 2
        upgrade_database(url, spec.package)
        _say(f"{name}: migrated")
    return 0


def topics(args: argparse.Namespace) -> int:
    """Create every topic the services use (with its partition count) that the cluster lacks.

    Existing topics are left alone (a different partition count is only warned about), so the
    command is idempotent. Missing topics get `--replication-factor` copies of each partition
    (1 by default, as on a single broker; 3 is usual on a cluster).
    """
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if not bootstrap:
        print("error: KAFKA_BOOTSTRAP_SERVERS is not set", file=sys.stderr)
        return 2
    wanted = _wanted_topics(_topic_prefix())
    try:
        asyncio.run(
            ensure_topics(bootstrap, wanted, timeout=args.timeout, replication_factor=args.replication_factor)
        )
    except (KafkaNotReadyError, KafkaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, partitions in wanted.items():
        _say(f"topic {name}: {partitions} partition(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="helpdesk", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start PostgreSQL, Kafka and the five services")
    run_parser.add_argument("--postgres-port", type=int, default=_env_int("HELPDESK_POSTGRES_PORT", 54329))
    run_parser.add_argument("--kafka-port", type=int, default=_env_int("HELPDESK_KAFKA_PORT", 19092))
    run_parser.set_defaults(func=run)
    migrate_parser = sub.add_parser("migrate", help="apply migrations to the databases in *_DATABASE_URL")
    migrate_parser.add_argument(
        "services",
        nargs="*",
        metavar="service",
        help=f"any of {', '.join(s.name for s in SERVICES)} (default: all)",
    )
    migrate_parser.set_defaults(func=migrate)
    topics_parser = sub.add_parser(
        "topics", help="create the missing topics on KAFKA_BOOTSTRAP_SERVERS (HELPDESK_TOPIC_PREFIX honoured)"
    )
    topics_parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the broker to answer (default 120)"
    )
    topics_parser.add_argument(
        "--replication-factor",
        type=int,
        default=1,
        choices=range(1, 33),
        metavar="N",
        help="copies of each partition for topics it creates (default 1; 3 on a cluster)",
    )
    topics_parser.set_defaults(func=topics)
    token_parser = sub.add_parser("token", help="print a dev bearer token (last line)")
    token_parser.add_argument("--role", required=True, help="role, or comma-separated roles")
    token_parser.add_argument("--sub", default=None, help="subject (user id); random when omitted")
    token_parser.add_argument("--ttl", type=int, default=12 * 3600, help="lifetime in seconds")
    token_parser.set_defaults(func=token)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
