"""deploy/ against the code it deploys: compose, Kubernetes, nginx, Prometheus, Grafana.

Plain file parsing — no Docker engine, cluster or network. Every expectation is derived
from the code rather than from a list kept here: the settings each service reads (its
pydantic settings class: env prefix, fields and aliases), the services (`SERVICES` of the
runtime), their routes (each app's OpenAPI document) and body limits, the chassis' probe
routes, the Prometheus metrics the code defines (with their labels), and what the image
itself reads (deploy/Dockerfile). So a renamed setting, a new route, a renamed metric or
label, or a service added without its manifests fails here, not in production.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from fastapi import FastAPI
from pydantic import AliasChoices

from helpdesk_runtime import cli
from helpdesk_runtime.kafka_admin import KafkaNotReadyError
from helpdesk_runtime.stack import SERVICES
from helpdesk_shared.chassis.app import ServiceDefinition, create_service_app
from helpdesk_shared.chassis.limits import BodyLimitMiddleware
from helpdesk_shared.chassis.settings import ServiceSettings
from helpdesk_shared.contracts.topics import ALL_TOPICS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
NAMES = [spec.name for spec in SERVICES]
TEST_DB = "postgresql://deploy-test@127.0.0.1:1/none"
SAMPLE_ID = "0b9f3c1e-3a7e-4d6b-9c59-6f1c2b8e4a10"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- what the code reads ---------------------------------------------------------------------------


@functools.cache
def settings_class(service: str) -> type[ServiceSettings]:
    """The service's settings class: the ServiceSettings subclass its settings module defines."""
    module = importlib.import_module(f"{service}_service.settings")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
        and value.__module__ == module.__name__
    ]
    assert len(found) == 1, f"{module.__name__} should define one settings class, found {found}"
    return found[0]


def setting_names(cls: type[ServiceSettings]) -> set[str]:
    """Every environment variable a settings class reads: its aliases, else prefix + field."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field}".upper())
    return names


@functools.cache
def all_setting_names() -> frozenset[str]:
    return frozenset(name for service in NAMES for name in setting_names(settings_class(service)))


@functools.cache
def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text(encoding="utf-8")


@functools.cache
def image_port() -> int:
    """The port the image's uvicorn listens on (PORT's default in the Dockerfile)."""
    match = re.search(r"^ENV .*\bPORT=(\d+)", dockerfile(), re.MULTILINE)
    assert match, "deploy/Dockerfile should set a default PORT"
    return int(match.group(1))


@functools.cache
def image_variables() -> frozenset[str]:
    """Variables the image's own CMD and HEALTHCHECK read (SERVICE, PORT), beyond the settings."""
    lines = [line for line in dockerfile().splitlines() if line.startswith(("CMD", "HEALTHCHECK"))]
    found = set()
    for line in lines:
        found.update(re.findall(r"\$\{(\w+)\}", line))
        found.update(re.findall(r"os\.environ\[\\?[\"'](\w+)", line))
    assert {"SERVICE", "PORT"} <= found, found
    return frozenset(found)


@functools.cache
def service_app(service: str) -> FastAPI:
    module = importlib.import_module(f"{service}_service.app")
    settings = settings_class(service)(database_url=TEST_DB, environment="test")
    app: FastAPI = module.create_app(settings)
    return app


@functools.cache
def api_paths(service: str) -> frozenset[str]:
    return frozenset(service_app(service).openapi()["paths"])


@functools.cache
def chassis_paths() -> frozenset[str]:
    """Routes every service gets from the chassis (probes and /metrics)."""
    settings = ServiceSettings(database_url=TEST_DB, environment="test")
    app = create_service_app(ServiceDefinition(name="chassis-probe", settings=settings))
    return frozenset(app.openapi()["paths"])


def body_limits(service: str) -> tuple[int, dict[str, int]]:
    """(default limit, {path: larger limit}) of the service's body-limit middleware."""
    for middleware in service_app(service).user_middleware:
        if middleware.cls is BodyLimitMiddleware:
            return middleware.kwargs["max_bytes"], dict(middleware.kwargs.get("larger") or {})
    raise AssertionError(f"{service} has no BodyLimitMiddleware")


# --- Prometheus metrics the code defines -----------------------------------------------------------

_METRIC_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
    "Info": ("_info",),
    "Enum": ("",),
}


def _source_files() -> Iterator[Path]:
    for folder in [ROOT / "shared" / "src", *(ROOT / f"{name}-service" / "src" for name in NAMES)]:
        yield from sorted(folder.rglob("*.py"))


@functools.cache
def code_metrics() -> dict[str, frozenset[str]]:
    """Every series name the code exposes (`_total`, `_bucket`, … included) → its label names."""
    exposed: dict[str, frozenset[str]] = {}
    for path in _source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            alias.asname or alias.name: alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client"
            for alias in node.names
            if alias.name in _METRIC_SUFFIXES
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            kind = imported.get(node.func.id)
            if kind is None or not node.args or not isinstance(node.args[0], ast.Constant):
                continue
            name = str(node.args[0].value)
            labels_node = node.args[2] if len(node.args) > 2 else None
            for keyword in node.keywords:
                if keyword.arg == "labelnames":
                    labels_node = keyword.value
            labels = frozenset(
                str(element.value)
                for element in getattr(labels_node, "elts", [])
                if isinstance(element, ast.Constant)
            )
            family = name.removesuffix("_total") if kind == "Counter" else name
            for suffix in _METRIC_SUFFIXES[kind]:
                exposed[family + suffix] = labels
    assert "helpdesk_http_requests_total" in exposed, "the chassis' HTTP metrics were not found"
    return exposed


@functools.cache
def code_strings() -> frozenset[str]:
    """Every string literal of the deployed code (label values must be among them)."""
    found: set[str] = set()
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return frozenset(found)


# Series that come from Prometheus itself and from the blackbox exporter, not from the code.
EXTERNAL_METRICS = {"up": "prometheus", "probe_success": "blackbox"}
TARGET_LABELS = {"service", "job", "instance"}

_PROMQL_TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      | (?P<var>\$\{?\w+\}?)
      | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z]*)
      | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
      | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}\[\]:@])
      | (?P<space>\s+)""",
    re.VERBOSE,
)
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2"}


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]


def promql(expr: str) -> tuple[list[Selector], set[str]]:
    """The series selectors of a PromQL expression, and the labels it groups by."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(expr):
        match = _PROMQL_TOKEN.match(expr, position)
        assert match, f"cannot read PromQL at {expr[position : position + 30]!r} in {expr!r}"
        position = match.end()
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append((kind, match.group()))
    selectors: list[Selector] = []
    grouping: set[str] = set()

    def closing(start: int, opening: str, close: str) -> int:
        depth = 0
        for index in range(start, len(tokens)):
            depth += (tokens[index][1] == opening) - (tokens[index][1] == close)
            if depth == 0:
                return index
        raise AssertionError(f"unbalanced {opening} in {expr!r}")

    def matchers(start: int) -> tuple[tuple[tuple[str, str, str], ...], int]:
        end = closing(start, "{", "}")
        inner = [token for token in tokens[start + 1 : end] if token[1] != ","]
        assert len(inner) % 3 == 0, f"cannot read the label matchers of {expr!r}"
        found = tuple((inner[i][1], inner[i + 1][1], inner[i + 2][1][1:-1]) for i in range(0, len(inner), 3))
        return found, end + 1

    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if text == "[":
            index = closing(index, "[", "]") + 1
        elif kind == "ident" and text in _GROUPING:
            index += 1
            if following == "(":
                end = closing(index, "(", ")")
                grouping.update(token[1] for token in tokens[index + 1 : end] if token[0] == "ident")
                index = end + 1
        elif kind == "ident" and (text in _KEYWORDS or text in _AGGREGATIONS or following == "("):
            index += 1
        elif kind == "ident":
            index += 1
            found: tuple[tuple[str, str, str], ...] = ()
            if following == "{":
                found, index = matchers(index)
            selectors.append(Selector(text, found))
        elif text == "{":
            raise AssertionError(f"a selector without a metric name in {expr!r}")
        else:
            index += 1
    return selectors, grouping


def scrape_jobs() -> set[str]:
    jobs = {job["job_name"] for job in _yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]}
    k8s_jobs = {
        job["job_name"] for job in _yaml(DEPLOY / "prometheus" / "kubernetes-scrape.yml")["scrape_configs"]
    }
    assert {"helpdesk", "helpdesk-readyz"} <= jobs & k8s_jobs
    return jobs & k8s_jobs


def check_promql(expr: str, where: str) -> set[str]:
    """Fail when the expression names a series, label or label value the code does not have;
    returns the metric names it uses."""
    selectors, grouping = promql(expr)
    assert selectors, f"{where}: no series in {expr!r}"
    metrics = code_metrics()
    routes = {path for name in NAMES for path in api_paths(name)} | chassis_paths()
    jobs = scrape_jobs()
    used_labels = set(TARGET_LABELS) | {"le"}
    for selector in selectors:
        if selector.metric in EXTERNAL_METRICS:
            allowed = set(TARGET_LABELS)
        else:
            assert selector.metric in metrics, (
                f"{where}: {selector.metric} is not a metric the code defines "
                f"(known: {', '.join(sorted(m for m in metrics if not m.endswith('_created')))})"
            )
            allowed = set(metrics[selector.metric]) | TARGET_LABELS
            if selector.metric.endswith("_bucket"):
                allowed.add("le")
        used_labels |= allowed
        for label, op, value in selector.matchers:
            assert label in allowed, f"{where}: {selector.metric} has no label {label!r} ({sorted(allowed)})"
            if "$" in value:
                continue  # a Grafana variable
            if op in ("=", "!="):
                if label == "job":
                    assert value in jobs, f"{where}: no scrape job {value!r} ({sorted(jobs)})"
                elif label == "service":
                    assert value in NAMES, f"{where}: no service {value!r}"
                elif label not in TARGET_LABELS:
                    assert value in code_strings(), (
                        f"{where}: {selector.metric}{{{label}={value!r}}}: the code never uses that value"
                    )
            elif label == "route":
                for alternative in value.split("|"):
                    assert alternative in routes, f"{where}: no service has the route {alternative!r}"
    unknown = grouping - used_labels
    assert not unknown, f"{where}: groups by {sorted(unknown)}, which no series in {expr!r} carries"
    return {selector.metric for selector in selectors}


# --- compose ---------------------------------------------------------------------------------------

_COMPOSE_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<plain>[A-Za-z_]\w*))"
)


class MissingVariableError(AssertionError):
    pass


def interpolate(value: Any, env: dict[str, str], seen: dict[str, str]) -> Any:
    """Compose's variable interpolation (`${V}`, `${V:-default}`, `${V:?error}`, `$$`, …)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env, seen) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, seen) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op") or "", match.group("arg") or ""
        seen[name] = op
        current = env.get(name)
        unset = not current if op.startswith(":") else current is None
        if op.endswith("-"):
            return arg if unset else str(current)
        if op.endswith("?"):
            if unset:
                raise MissingVariableError(f"{name}: {arg}")
            return str(current)
        if op.endswith("+"):
            return "" if unset else arg
        return current or ""

    return _COMPOSE_VARIABLE.sub(substitute, value)


def example_assignments(path: Path) -> tuple[dict[str, str], set[str]]:
    """(uncommented NAME=value lines, names only mentioned in comments as `# NAME=`)."""
    given: dict[str, str] = {}
    mentioned: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line):
            given[match.group(1)] = match.group(2)
        elif match := re.match(r"^#\s*([A-Z][A-Z0-9_]*)=", line):
            mentioned.add(match.group(1))
    return given, mentioned


def stand_in(name: str) -> str:
    """A plausible value for a variable an example file leaves for the operator to fill in."""
    if name.endswith("_DATABASE_URL"):
        return f"postgresql://helpdesk:secret@{name.split('_')[0].lower()}-db.test:5432/helpdesk"
    if name == "KAFKA_BOOTSTRAP_SERVERS":
        return "kafka-1.test:9092,kafka-2.test:9092"
    if name.endswith("_URL"):
        return "https://helpdesk.test/v1/tickets"
    return f"stand-in-{name.lower().replace('_', '-')}-0123456789abcdef"


@functools.cache
def compose_raw() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(DEPLOY / "compose.yaml")
    return data


def compose_env() -> dict[str, str]:
    given, _ = example_assignments(DEPLOY / ".env.example")
    return {name: value or stand_in(name) for name, value in given.items()}


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as compose sees it with the .env.example values filled in."""
    result: dict[str, Any] = interpolate(compose_raw(), compose_env() if env is None else env, {})
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    given = service.get("environment") or {}
    if isinstance(given, list):
        given = dict(item.split("=", 1) for item in given)
    return {key: "" if value is None else str(value) for key, value in given.items()}


def compose_roles() -> tuple[dict[str, str], dict[str, str], str]:
    """(service → its compose service, service → its migrate job, the topics job) of the stack."""
    apps: dict[str, str] = {}
    migrations: dict[str, str] = {}
    topics: list[str] = []
    for key, service in compose()["services"].items():
        if "build" not in service:
            continue
        command = service.get("command") or []
        if command[:2] == ["helpdesk", "migrate"]:
            assert len(command) == 3, f"{key}: migrate one service per job"
            migrations[command[2]] = key
        elif command == ["helpdesk", "topics"]:
            topics.append(key)
        else:
            assert not command, f"{key} runs the helpdesk image with an unknown command {command}"
            apps[environment(service).get("SERVICE", "")] = key
    assert len(topics) == 1, f"one topics job, found {topics}"
    return apps, migrations, topics[0]


def load_settings(monkeypatch: pytest.MonkeyPatch, service: str, env: dict[str, str]) -> ServiceSettings:
    """The service's settings as the process would read them from exactly this environment
    (nothing of the developer's own environment leaks in)."""
    with monkeypatch.context() as scoped:
        for name in all_setting_names():
            scoped.delenv(name, raising=False)
        for name, value in env.items():
            scoped.setenv(name, value)
        return settings_class(service)()


def run_cli(monkeypatch: pytest.MonkeyPatch, command: list[str], env: dict[str, str]) -> int:
    """Run a job's command through the real `helpdesk` CLI in exactly the job's environment."""
    assert command[0] == "helpdesk", f"{command} is not a helpdesk command"
    with monkeypatch.context() as scoped:
        for name in all_setting_names():
            scoped.delenv(name, raising=False)
        for name, value in env.items():
            scoped.setenv(name, value)
        return cli.main(command[1:])


def run_migrate(monkeypatch: pytest.MonkeyPatch, command: list[str], env: dict[str, str]) -> list[Any]:
    """The databases a migrate command would upgrade: [(url, package)]."""
    calls: list[tuple[str, str]] = []
    with monkeypatch.context() as scoped:
        scoped.setattr(cli, "upgrade_database", lambda url, package: calls.append((url, package)))
        assert run_cli(scoped, command, env) == 0
    return calls


REPLICATION_FACTORS: list[int] = []  # what each recorded `ensure_topics` call was asked for


@pytest.fixture
def recorded_topics(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, int], float]]:
    """`ensure_topics` replaced by a recorder of its calls: (bootstrap servers, topics, timeout)."""
    calls: list[tuple[str, dict[str, int], float]] = []
    replication: list[int] = REPLICATION_FACTORS
    replication.clear()

    async def ensure_topics(
        bootstrap: str,
        topics: dict[str, int],
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
        replication_factor: int = 1,
    ) -> None:
        calls.append((bootstrap, dict(topics), timeout))
        replication.append(replication_factor)

    monkeypatch.setattr(cli, "ensure_topics", ensure_topics)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("HELPDESK_TOPIC_PREFIX", raising=False)
    return calls


def test_compose_runs_every_service_its_migrations_and_the_topics_job() -> None:
    apps, migrations, topics = compose_roles()
    services = compose()["services"]
    assert set(apps) == set(NAMES), f"compose services per SERVICE: {apps}"
    assert set(migrations) == set(NAMES), f"migrate jobs: {migrations}"
    for name in NAMES:
        app = services[apps[name]]
        build = app["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert (DEPLOY / build["context"]).resolve() == ROOT
        for job in (topics, migrations[name]):
            condition = app.get("depends_on", {}).get(job, {}).get("condition")
            assert condition == "service_completed_successfully", f"{name} must wait for {job} to complete"
            assert services[job].get("restart") == "no", f"{job} is a one-shot job"
        for dependency, spec in app["depends_on"].items():
            if "image" in services[dependency] and "build" not in services[dependency]:
                assert spec["condition"] == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_compose_sets_only_settings_the_code_reads() -> None:
    apps, migrations, topics = compose_roles()
    services = compose()["services"]
    for name in NAMES:
        allowed = setting_names(settings_class(name)) | image_variables()
        unknown = set(environment(services[apps[name]])) - allowed
        assert not unknown, f"compose `{apps[name]}` sets {sorted(unknown)}, which {name} never reads"
        assert f"{name.upper()}_DATABASE_URL" in environment(services[apps[name]])
    for job in [topics, *migrations.values()]:
        unknown = set(environment(services[job])) - all_setting_names()
        assert not unknown, f"compose `{job}` sets {sorted(unknown)}, which no service reads"


def test_compose_settings_are_accepted_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    apps, _, _ = compose_roles()
    services = compose()["services"]
    for name in NAMES:
        env = environment(services[apps[name]])
        assert env.get("HELPDESK_ENV") == "production", f"{name} must run with HELPDESK_ENV=production"
        settings = load_settings(monkeypatch, name, env)
        assert settings.environment == "production"
        assert settings.service_name == name
        host = urlparse(settings.database_url).hostname
        assert host in services and "postgres" in services[host]["image"], f"{name}'s database {host}"
    hosts = {urlparse(environment(services[apps[n]])[f"{n.upper()}_DATABASE_URL"]).hostname for n in NAMES}
    assert len(hosts) == len(NAMES), "one PostgreSQL per service"


def test_compose_jobs_run_real_cli_commands(
    monkeypatch: pytest.MonkeyPatch, recorded_topics: list[tuple[str, dict[str, int], float]]
) -> None:
    apps, migrations, topics = compose_roles()
    services = compose()["services"]
    job = services[topics]
    assert run_cli(monkeypatch, job["command"], environment(job)) == 0
    # The job creates the topics every service uses: same broker, same prefix.
    ((bootstrap, created, _),) = recorded_topics
    for name in NAMES:
        service_env = environment(services[apps[name]])
        prefix = service_env.get("HELPDESK_TOPIC_PREFIX", "")
        assert bootstrap == service_env["KAFKA_BOOTSTRAP_SERVERS"], f"{topics} and {name} use other brokers"
        assert created == {prefix + t: n for t, n in ALL_TOPICS.items()}, f"{topics} and {name}: other prefix"
    for name in NAMES:
        migrated = run_migrate(
            monkeypatch, services[migrations[name]]["command"], environment(services[migrations[name]])
        )
        url = environment(services[apps[name]])[f"{name.upper()}_DATABASE_URL"]
        assert migrated == [(url, f"{name}_service")], f"{migrations[name]} migrates {migrated}"


def test_compose_required_variables_are_documented_and_example_holds_no_secret() -> None:
    seen: dict[str, str] = {}
    interpolate(compose_raw(), compose_env(), seen)
    given, mentioned = example_assignments(DEPLOY / ".env.example")
    undocumented = set(seen) - set(given) - mentioned
    assert not undocumented, f"deploy/.env.example does not mention {sorted(undocumented)}"
    required = {name for name, op in seen.items() if op.endswith("?")}
    assert required <= set(given), f"required but commented out: {sorted(required - set(given))}"
    filled = {name: value for name, value in given.items() if value}
    assert not filled, f"deploy/.env.example must leave values to the operator, not set {sorted(filled)}"
    with pytest.raises(MissingVariableError):
        compose(dict(given))  # the example as it stands starts nothing
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored and "k8s/secrets.env" in ignored


def test_compose_publishes_on_loopback_only_and_mounts_files_that_exist() -> None:
    for key, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{key} publishes {port} beyond this host"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{key} mounts {source}, which does not exist"
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert str(environment(kafka)["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"


# --- Kubernetes ------------------------------------------------------------------------------------


@functools.cache
def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(K8S / "kustomization.yaml")
    return data


@functools.cache
def k8s_objects() -> tuple[dict[str, Any], ...]:
    found: list[dict[str, Any]] = []
    for resource in kustomization()["resources"]:
        found.extend(doc for doc in yaml.safe_load_all((K8S / resource).read_text(encoding="utf-8")) if doc)
    return tuple(found)


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"one {kind} {name}, found {len(matches)}"
    return matches[0]


def generated_config_maps() -> dict[str, dict[str, str]]:
    maps = {}
    for generator in kustomization().get("configMapGenerator", []):
        maps[generator["name"]] = dict(item.split("=", 1) for item in generator.get("literals", []))
    return maps


def container_env(
    container: dict[str, Any], secrets: dict[str, str]
) -> tuple[dict[str, str], list[tuple[str, bool]]]:
    """(the container's environment, its secret keys with whether each is optional)."""
    maps = generated_config_maps()
    env: dict[str, str] = {}
    secret_keys: list[tuple[str, bool]] = []
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: envFrom only from generated ConfigMaps"
        env.update(maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            key, optional = ref["secretKeyRef"]["key"], bool(ref["secretKeyRef"].get("optional"))
            assert ref["secretKeyRef"]["name"] == "helpdesk-secrets"
            secret_keys.append((key, optional))
            if key in secrets:
                env[item["name"]] = secrets[key]
            else:
                assert optional, f"{container['name']}: {key} is required but not in secrets.env.example"
        else:
            key_ref = ref["configMapKeyRef"]
            env[item["name"]] = maps[key_ref["name"]][key_ref["key"]]
    return env, secret_keys


def k8s_secrets() -> dict[str, str]:
    given, _ = example_assignments(K8S / "secrets.env.example")
    return {name: value or stand_in(name) for name, value in given.items()}


def test_kustomization_lists_files_that_exist() -> None:
    for resource in kustomization()["resources"]:
        assert (K8S / resource).is_file(), f"kustomization.yaml lists {resource}, which does not exist"
    for generator in kustomization().get("configMapGenerator", []):
        for file in generator.get("files", []):
            assert (K8S / file.split("=")[-1]).is_file(), f"{generator['name']}: {file} does not exist"
    listed = set(kustomization()["resources"])
    for path in K8S.glob("*.yaml"):
        assert path.name == "kustomization.yaml" or path.name in listed, (
            f"{path.name} is not in kustomization"
        )


def test_k8s_deploys_every_service_with_probes_migrations_and_metrics() -> None:
    image = kustomization()["images"][0]["name"]
    probes = chassis_paths()
    for name in NAMES:
        deployment = k8s_object("Deployment", name)
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (container,) = pod["spec"]["containers"]
        assert container["image"] == image
        env, _ = container_env(container, k8s_secrets())
        assert env["SERVICE"] == name
        (port,) = container["ports"]
        assert port["containerPort"] == image_port(), f"{name} listens on {image_port()} (deploy/Dockerfile)"
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert container[probe]["httpGet"]["path"] == path, f"{name} {probe}"
            assert container[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
        assert {"/readyz", "/healthz", "/metrics"} <= probes
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] in probes
        assert int(annotations["prometheus.io/port"]) == image_port()
        assert labels["app.kubernetes.io/name"] == name, (
            "kubernetes-scrape.yml names the service by this label"
        )
        # Non-root, nothing writable but /tmp, no privilege escalation: pod and every container.
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["automountServiceAccountToken"] is False
        for each in [container, *pod["spec"]["initContainers"]]:
            security = each["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(each["resources"]), f"{name}/{each['name']} resources"
        service = k8s_object("Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        (service_port,) = service["spec"]["ports"]
        assert service_port["port"] == image_port(), "the gateway's upstreams reach <service>:<image port>"
        assert service_port["targetPort"] in (port["name"], port["containerPort"])
        budget = k8s_object("PodDisruptionBudget", name)
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_migrations_and_topics_run_real_cli_commands(
    monkeypatch: pytest.MonkeyPatch, recorded_topics: list[tuple[str, dict[str, int], float]]
) -> None:
    secrets = k8s_secrets()
    for name in NAMES:
        pod = k8s_object("Deployment", name)["spec"]["template"]["spec"]
        (migrate,) = pod["initContainers"]
        env, _ = container_env(migrate, secrets)
        assert migrate["command"] == ["helpdesk", "migrate", name]
        migrated = run_migrate(monkeypatch, migrate["command"], env)
        assert migrated == [(secrets[f"{name.upper()}_DATABASE_URL"], f"{name}_service")]
    (container,) = k8s_object("Job", "helpdesk-topics")["spec"]["template"]["spec"]["containers"]
    job_env, _ = container_env(container, secrets)
    assert run_cli(monkeypatch, container["command"], job_env) == 0
    # The Job creates the topics every service uses: same broker, same prefix.
    ((bootstrap, created, _),) = recorded_topics
    for name in NAMES:
        (service,) = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"]
        service_env, _ = container_env(service, secrets)
        prefix = service_env.get("HELPDESK_TOPIC_PREFIX", "")
        assert bootstrap == service_env["KAFKA_BOOTSTRAP_SERVERS"], f"the Job and {name} use other brokers"
        assert created == {prefix + t: n for t, n in ALL_TOPICS.items()}, f"the Job and {name}: other prefix"


def test_k8s_sets_only_settings_the_code_reads_and_they_are_accepted_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = k8s_secrets()
    referenced: set[str] = set()
    for name in NAMES:
        (container,) = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"]
        env, keys = container_env(container, secrets)
        referenced.update(key for key, _ in keys)
        unknown = set(env) - setting_names(settings_class(name)) - image_variables()
        assert not unknown, f"the {name} Deployment sets {sorted(unknown)}, which {name} never reads"
        settings = load_settings(monkeypatch, name, env)
        assert settings.environment == "production"
        assert settings.service_name == name
    given, _ = example_assignments(K8S / "secrets.env.example")
    assert not {key for key, value in given.items() if value}, "secrets.env.example must hold no value"
    assert set(given) <= referenced, f"secrets.env.example documents unused {sorted(set(given) - referenced)}"
    job = k8s_object("Job", "helpdesk-topics")
    for container in job["spec"]["template"]["spec"]["containers"]:
        env, _ = container_env(container, secrets)
        assert not set(env) - all_setting_names(), "the topics job sets what no service reads"


def test_k8s_scales_intake_and_routing_and_routes_the_ingress_to_the_gateway() -> None:
    for name in ("intake", "routing"):
        hpa = k8s_object("HorizontalPodAutoscaler", name)
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert hpa["spec"]["minReplicas"] >= 2
        assert "replicas" not in k8s_object("Deployment", name)["spec"], f"the HPA owns {name}'s replicas"
    routing_partitions = ALL_TOPICS["helpdesk.intake"]
    assert k8s_object("HorizontalPodAutoscaler", "routing")["spec"]["maxReplicas"] <= routing_partitions
    gateway = k8s_object("Deployment", "gateway")["spec"]["template"]["spec"]
    (nginx,) = gateway["containers"]
    mount = next(m for m in nginx["volumeMounts"] if m["mountPath"] == "/etc/nginx/nginx.conf")
    volume = next(v for v in gateway["volumes"] if v["name"] == mount["name"])
    generator = next(
        g for g in kustomization()["configMapGenerator"] if g["name"] == volume["configMap"]["name"]
    )
    assert [Path(f).name for f in generator["files"]] == [mount["subPath"]] == ["nginx.conf"]
    listen = nginx_directives(nginx_server(K8S / "gateway" / "nginx.conf"), "listen")
    assert [int(args[0]) for args in listen] == [nginx["ports"][0]["containerPort"]]
    ingress = k8s_object("Ingress", "helpdesk")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "gateway"
            ports = {p["name"] for p in k8s_object("Service", "gateway")["spec"]["ports"]}
            assert backend["port"]["name"] in ports
            assert all(
                api.startswith(path["path"]) for n in NAMES for api in api_paths(n) if api.startswith("/v1")
            )


# --- nginx -----------------------------------------------------------------------------------------

Directive = tuple[str, list[str], list[Any] | None]
_NGINX_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)'|([{};])|([^\s{};"'#][^\s{};"']*)"""
)


def parse_nginx(text: str) -> list[Directive]:
    tokens: list[tuple[str, bool]] = []  # (text, is a structural character)
    for match in _NGINX_TOKEN.finditer(text):
        if match.group(3):
            tokens.append((match.group(3), True))
        elif match.group(4) is not None:
            tokens.append((match.group(4), False))
        elif match.group(1) is not None or match.group(2) is not None:
            tokens.append((match.group(1) if match.group(1) is not None else match.group(2), False))
    stream = iter(tokens)

    def block() -> list[Directive]:
        items: list[Directive] = []
        words: list[str] = []
        for token, structural in stream:
            if structural and token == ";":
                items.append((words[0], words[1:], None))
                words = []
            elif structural and token == "{":
                items.append((words[0], words[1:], block()))
                words = []
            elif structural and token == "}":
                return items
            else:
                words.append(token)
        assert not words, f"unterminated directive {words}"
        return items

    return block()


def nginx_directives(block: list[Directive], name: str) -> list[list[str]]:
    return [args for directive, args, _ in block if directive == name]


def nginx_http(path: Path) -> list[Directive]:
    (http,) = [
        children for name, _, children in parse_nginx(path.read_text(encoding="utf-8")) if name == "http"
    ]
    assert http is not None
    return http


def nginx_server(path: Path) -> list[Directive]:
    (server,) = [children for name, _, children in nginx_http(path) if name == "server"]
    assert server is not None
    return server


def _size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


@dataclass(frozen=True)
class Location:
    modifier: str
    pattern: str
    upstream: str | None
    body_limit: int | None


def nginx_locations(server: list[Directive]) -> list[Location]:
    found = []
    for name, args, children in server:
        if name != "location" or args[0].startswith("@"):
            continue
        assert children is not None
        modifier, pattern = (args[0], args[1]) if len(args) == 2 else ("", args[0])
        proxy = nginx_directives(children, "proxy_pass")
        limit = nginx_directives(children, "client_max_body_size")
        upstream = urlparse(proxy[0][0]).hostname if proxy else None
        found.append(Location(modifier, pattern, upstream, _size(limit[0][0]) if limit else None))
    return found


def nginx_route(locations: list[Location], path: str) -> Location:
    """The location nginx picks for a path: exact, then the longest prefix unless a regular
    expression (in order) matches, `^~` prefixes skipping the regular expressions."""
    for location in locations:
        if location.modifier == "=" and location.pattern == path:
            return location
    prefixes = [loc for loc in locations if loc.modifier in ("", "^~") and path.startswith(loc.pattern)]
    longest = max(prefixes, key=lambda loc: len(loc.pattern), default=None)
    if longest is not None and longest.modifier == "^~":
        return longest
    for location in locations:
        flags = re.IGNORECASE if location.modifier == "~*" else 0
        if location.modifier in ("~", "~*") and re.search(location.pattern, path, flags):
            return location
    assert longest is not None, f"no location serves {path}"
    return longest


def nginx_upstreams(path: Path) -> dict[str, tuple[str, int]]:
    upstreams = {}
    for name, args, children in nginx_http(path):
        if name == "upstream":
            assert children is not None
            (server,) = nginx_directives(children, "server")
            host, port = server[0].rsplit(":", 1)
            upstreams[args[0]] = (host, int(port))
    return upstreams


GATEWAY_CONFS = [DEPLOY / "nginx" / "nginx.conf", K8S / "gateway" / "nginx.conf"]


@pytest.mark.parametrize("conf", GATEWAY_CONFS, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_gateway_routes_every_api_path_to_its_service_and_keeps_operations_inside(conf: Path) -> None:
    server = nginx_server(conf)
    locations = nginx_locations(server)
    upstreams = nginx_upstreams(conf)
    assert set(upstreams.values()) == {(name, image_port()) for name in NAMES}
    for name in NAMES:
        for template in api_paths(name):
            path = re.sub(r"\{[^}]+\}", SAMPLE_ID, template)
            location = nginx_route(locations, path)
            if template in chassis_paths():
                assert location.upstream is None, f"{conf.name}: {path} must not leave the cluster"
                continue
            assert location.upstream is not None, f"{conf.name}: {template} ({name}) is not routed"
            assert upstreams[location.upstream][0] == name, (
                f"{conf.name}: {template} belongs to {name} but goes to {upstreams[location.upstream][0]}"
            )
    for inside in ("/metrics", "/readyz", "/docs", "/openapi.json"):
        assert nginx_route(locations, inside).upstream is None, f"{conf.name} exposes {inside}"


@pytest.mark.parametrize("conf", GATEWAY_CONFS, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_gateway_body_limits_let_the_services_answer(conf: Path) -> None:
    server = nginx_server(conf)
    (default,) = nginx_directives(server, "client_max_body_size")
    locations = nginx_locations(server)
    for name in NAMES:
        limit, larger = body_limits(name)
        assert _size(default[0]) >= limit, f"{conf.name}: bodies up to {limit} bytes must reach {name}"
        for path, allowed in larger.items():
            location = nginx_route(locations, path)
            effective = location.body_limit or _size(default[0])
            assert effective >= allowed, f"{conf.name}: {path} takes up to {allowed} bytes ({name})"


def test_compose_and_k8s_gateways_route_alike() -> None:
    compose_server, k8s_server = (nginx_server(conf) for conf in GATEWAY_CONFS)
    assert compose_server == k8s_server, "deploy/nginx/nginx.conf and deploy/k8s/gateway/nginx.conf differ"
    gateway = compose()["services"]["gateway"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in gateway["volumes"]}
    assert (DEPLOY / mounted["/etc/nginx/nginx.conf"]).resolve() == GATEWAY_CONFS[0]
    (listen,) = nginx_directives(compose_server, "listen")
    assert any(str(port).endswith(f":{listen[0]}") for port in gateway["ports"])


# --- Prometheus and Grafana ------------------------------------------------------------------------


def test_prometheus_scrapes_every_service_and_probes_readiness() -> None:
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in ("helpdesk", "helpdesk-readyz"):
        (discovery,) = jobs[job]["dns_sd_configs"]
        assert sorted(discovery["names"]) == sorted(NAMES)
        assert discovery["port"] == image_port()
        assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in jobs[job][
            "relabel_configs"
        ]
    assert jobs["helpdesk"].get("metrics_path", "/metrics") in chassis_paths()
    replacements = " ".join(str(r.get("replacement", "")) for r in jobs["helpdesk-readyz"]["relabel_configs"])
    assert "/readyz" in replacements
    blackbox = re.search(r"(\w[\w-]*):9115", replacements)
    assert blackbox and blackbox.group(1) in compose()["services"]
    modules = _yaml(DEPLOY / "prometheus" / "blackbox.yml")["modules"]
    assert jobs["helpdesk-readyz"]["params"]["module"][0] in modules
    prometheus = compose()["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if v.startswith(".")}
    for rule_file in config["rule_files"]:
        assert rule_file in mounts, f"prometheus.yml loads {rule_file}, which compose does not mount"
        assert (DEPLOY / mounts[rule_file]).resolve() == DEPLOY / "prometheus" / "alerts.yml"
    # The Kubernetes scrape jobs read the annotations and the label the Deployments set.
    k8s = (DEPLOY / "prometheus" / "kubernetes-scrape.yml").read_text(encoding="utf-8")
    annotations = k8s_object("Deployment", "intake")["spec"]["template"]["metadata"]["annotations"]
    for annotation in annotations:
        meta = "__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9]", "_", annotation)
        assert meta in k8s, f"kubernetes-scrape.yml ignores the {annotation} annotation"
    assert "__meta_kubernetes_pod_label_app_kubernetes_io_name" in k8s


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in _yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"] for rule in group["rules"]
    ]


def test_alert_rules_use_only_metrics_and_labels_the_code_defines() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    used: set[str] = set()
    for rule in rules:
        used |= check_promql(rule["expr"], f"alert {rule['alert']}")
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    # What the architecture asks alerts for, by the series that carry it.
    for needed in (
        "up",  # a service down
        "probe_success",  # readiness failing
        "helpdesk_outbox_backlog",
        "helpdesk_consumer_lag",
        "helpdesk_events_consumed_total",  # dead letters
        "helpdesk_sla_fired_total",
        "helpdesk_http_errors_total",
        "helpdesk_http_request_duration_seconds_bucket",
    ):
        assert needed in used, f"no alert rule watches {needed}"


def grafana_dashboards() -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert paths, "no Grafana dashboard"
    return [(path, json.loads(path.read_text(encoding="utf-8"))) for path in paths]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_dashboards_show_every_metric_the_code_defines() -> None:
    shown: set[str] = set()
    for path, dashboard in grafana_dashboards():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        sources = {v["name"] for v in variables.values() if v["type"] == "datasource"}
        for panel in _panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                where = f"{path.name}: panel {panel['title']!r}"
                uid = (target.get("datasource") or panel["datasource"])["uid"]
                assert uid == "prometheus" or uid.strip("${}") in sources, f"{where}: data source {uid}"
                shown |= check_promql(target["expr"], where)
                for variable in re.findall(r"\$(\w+)", target["expr"]):
                    assert variable.startswith("__") or variable in variables, f"{where}: no ${variable}"
    families = {re.sub(r"_(bucket|sum|count|total|created)$", "", name) for name in code_metrics()}
    missing = {
        family
        for family in families
        if not any(re.sub(r"_(bucket|sum|count|total|created)$", "", s) == family for s in shown)
    }
    assert not missing, f"no dashboard panel shows {sorted(missing)}"


def test_grafana_is_provisioned_with_the_dashboards_and_prometheus() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasource,) = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["uid"] == "prometheus" and datasource["type"] == "prometheus"
    assert urlparse(datasource["url"]).hostname in compose()["services"]
    (provider,) = _yaml(provisioning / "dashboards" / "helpdesk.yml")["providers"]
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith(".")}
    assert (DEPLOY / mounts[provider["options"]["path"]]).resolve() == DEPLOY / "grafana" / "dashboards"
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).resolve() == provisioning
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (DEPLOY / "grafana" / "dashboards" / Path(home).name).is_file()
    uids = [dashboard["uid"] for _, dashboard in grafana_dashboards()]
    assert len(uids) == len(set(uids))


def test_build_context_keeps_what_the_dockerfile_copies() -> None:
    """deploy/Dockerfile.dockerignore allows only the Dockerfile's COPY sources into the context."""
    rules = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the ignore file lists what enters the context, after ignoring everything"
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    sources = [
        source
        for line in dockerfile().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources and set(sources) <= allowed, f"ignored but copied: {sorted(set(sources) - allowed)}"
    for source in sources:
        assert (ROOT / source).exists(), f"deploy/Dockerfile copies {source}, which does not exist"


def test_probes_and_health_checks_use_chassis_routes() -> None:
    paths = set(re.findall(r"127\.0\.0\.1:\{[^}]+\}(/\w+)", dockerfile()))
    apps, _, _ = compose_roles()
    for key in apps.values():
        command = " ".join(compose()["services"][key]["healthcheck"]["test"])
        match = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", command)
        assert match and int(match.group(1)) == image_port(), key
        paths.add(match.group(2))
    assert paths and paths <= chassis_paths(), f"{paths - chassis_paths()} are not chassis routes"


# --- `helpdesk topics` -----------------------------------------------------------------------------


def test_topics_command_creates_every_topic_with_the_prefix(
    recorded_topics: list[tuple[str, dict[str, int], float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("HELPDESK_TOPIC_PREFIX", "staging.")
    assert cli.main(["topics"]) == 0
    ((bootstrap, topics, timeout),) = recorded_topics
    assert bootstrap == "kafka-1:9092,kafka-2:9092"
    assert topics == {f"staging.{name}": partitions for name, partitions in ALL_TOPICS.items()}
    assert timeout > 30, "a one-shot job waits for a broker that is still starting"
    # The names are the ones the services publish to and consume (their settings' prefix).
    settings = settings_class("intake")(database_url=TEST_DB, topic_prefix="staging.")
    assert {settings.topic(name) for name in ALL_TOPICS} == set(topics)
    assert REPLICATION_FACTORS == [1]  # a single broker's, unless asked


def test_topics_command_creates_topics_with_the_replication_factor_asked_for(
    recorded_topics: list[tuple[str, dict[str, int], float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a cluster of several brokers, topics with one copy lose events with any broker.
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092")
    assert cli.main(["topics", "--replication-factor", "3"]) == 0
    assert REPLICATION_FACTORS == [3]
    with pytest.raises(SystemExit):
        cli.main(["topics", "--replication-factor", "0"])


def test_topics_command_without_prefix_and_with_a_timeout(
    recorded_topics: list[tuple[str, dict[str, int], float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert cli.main(["topics", "--timeout", "5"]) == 0
    assert recorded_topics == [("kafka:9092", dict(ALL_TOPICS), 5.0)]


def test_topics_command_needs_the_bootstrap_servers(
    recorded_topics: list[tuple[str, dict[str, int], float]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["topics"]) == 2
    assert recorded_topics == []
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err


def test_topics_command_fails_when_the_broker_does_not_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def unreachable(bootstrap: str, topics: dict[str, int], *, timeout: float = 30.0, **_: int) -> None:  # noqa: ASYNC109
        raise KafkaNotReadyError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s")

    monkeypatch.setattr(cli, "ensure_topics", unreachable)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "nowhere:9092")
    assert cli.main(["topics", "--timeout", "1"]) == 1
    assert "did not answer" in capsys.readouterr().err


def test_topics_command_is_documented() -> None:
    assert "helpdesk topics" in (cli.__doc__ or "")
    assert "helpdesk topics" in (DEPLOY / "README.md").read_text(encoding="utf-8")
