"""docker-compose.yml and .env.example: checked without Docker (none runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from skintriage import cli
from skintriage.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
# Variables only docker-compose.yml itself reads (interpolation), not the application.
COMPOSE_ONLY_VARS = {"POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
LONG_RUNNING = {"bot", "worker-gpu", "worker-replies", "beat", "console"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def skintriage_commands(compose: dict) -> list[tuple[str, list[str]]]:
    """(service, argv after `skintriage`) for every service that runs the CLI."""
    found = []
    for name, service in compose["services"].items():
        command = service.get("command")
        if isinstance(command, str):
            command = command.split()
        if command and command[0] == "skintriage":
            found.append((name, command[1:]))
    return found


def command_path(argv: list[str]) -> str:
    """The COMMANDS path an argv names: one word, or two for a group such as `db upgrade`."""
    paths = {path for path, _, _ in cli.COMMANDS}
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in paths:
        return f"{argv[0]} {argv[1]}"
    return argv[0]


def test_compose_file_has_every_production_service(compose: dict) -> None:
    expected = {"postgres", "redis", "minio", "migrate"} | LONG_RUNNING
    assert expected <= set(compose["services"])


def test_every_skintriage_command_in_compose_exists_in_the_cli(compose: dict) -> None:
    commands = skintriage_commands(compose)
    assert {name for name, _ in commands} == {"migrate"} | LONG_RUNNING
    paths = {path for path, _, _ in cli.COMMANDS}
    for name, argv in commands:
        assert command_path(argv) in paths, f"service {name} runs `skintriage {' '.join(argv)}`, not a CLI command"


def test_every_compose_command_line_parses(compose: dict) -> None:
    # Unknown options would only show when the container starts; argparse finds them here.
    for name, argv in skintriage_commands(compose):
        parser = cli.build_parser(command_path(argv).split())
        args = parser.parse_args(argv)
        assert args._path == command_path(argv), name


def test_gpu_worker_reserves_an_nvidia_gpu_and_runs_one_solo_process(compose: dict) -> None:
    worker = compose["services"]["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    command = worker["command"]
    assert command[command.index("--pool") + 1] == "solo"
    assert command[command.index("--concurrency") + 1] == "1"
    assert command[command.index("--queues") + 1] == "triage"
    assert worker["build"]["dockerfile"] == "docker/Dockerfile.gpu"


def test_reply_sender_consumes_only_the_replies_queue(compose: dict) -> None:
    command = compose["services"]["worker-replies"]["command"]
    assert command[command.index("--queues") + 1] == "replies"


def test_long_running_services_have_healthchecks_and_wait_for_migrations(compose: dict) -> None:
    for name in LONG_RUNNING | {"postgres", "redis", "minio"}:
        health = compose["services"][name].get("healthcheck", {})
        assert health.get("test") and not health.get("disable"), f"{name} has no healthcheck"
    for name in LONG_RUNNING:
        depends = compose["services"][name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert compose["services"]["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_app_services_use_the_production_backends(compose: dict) -> None:
    for name in LONG_RUNNING | {"migrate"}:
        env = compose["services"][name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert env["CELERY_BROKER_URL"].startswith("redis://"), name
        assert env["IMAGE_STORE"] == "s3", name
        assert env["SKINTRIAGE_ENV"] == "production", name
        assert compose["services"][name]["env_file"] == ".env", name


def test_dockerfiles_exist_for_every_build(compose: dict) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).is_file(), name


# The model stack, by distribution (pyproject.toml's `worker`, `cpu` and `gpu` extras).
MODEL_STACK = {"torch", "torchvision", "tensorflow", "tensorflow-cpu", "keras", "opencv-python-headless", "grad-cam"}
CPU_SERVICES = {"bot", "worker-replies", "beat", "console", "migrate"}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower() for req in requirements}


def _pip_installed_extras(dockerfile: Path) -> set[str]:
    """The extras a Dockerfile's `pip install '.[a,b]'` lines name ("" for a bare `pip install .`)."""
    extras = set()
    for match in re.finditer(r"pip install\s+'?\.(?:\[([\w,-]+)\])?'?", dockerfile.read_text()):
        extras |= set((match.group(1) or "").split(","))
    return extras


def test_the_cpu_image_serves_the_light_roles_and_installs_no_model_stack(compose: dict) -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert not _requirement_names(project["dependencies"]) & MODEL_STACK
    for name in CPU_SERVICES:
        assert compose["services"][name].get("build", {}).get("dockerfile", "docker/Dockerfile.cpu") == (
            "docker/Dockerfile.cpu"
        ), name
        assert compose["services"][name]["image"] == "skintriage-cpu:latest", name
    dockerfile = ROOT / "docker/Dockerfile.cpu"
    installed = _pip_installed_extras(dockerfile)
    assert installed == {"console"}
    assert not any(_requirement_names(extras[extra]) & MODEL_STACK for extra in installed)
    assert not re.search(r"torch|tensorflow|keras|opencv", dockerfile.read_text().split("FROM", 1)[1].lower())
    gpu = _pip_installed_extras(ROOT / "docker/Dockerfile.gpu")
    assert {"worker", "gpu"} <= gpu and "cpu" not in gpu


def settings_env_names() -> set[str]:
    fields = Settings.model_fields.values()
    return {field.validation_alias for field in fields if isinstance(field.validation_alias, str)}


def test_env_example_names_only_known_settings() -> None:
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    unknown = names - settings_env_names() - COMPOSE_ONLY_VARS
    assert not unknown, f".env.example names variables no Settings field reads: {sorted(unknown)}"
    assert {"TELEGRAM_BOT_TOKEN", "CONSOLE_SECRET_KEY", "POSTGRES_PASSWORD"} <= names


def test_compose_interpolates_only_variables_the_env_example_documents(compose: dict) -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert used <= documented, f"compose reads undocumented variables: {sorted(used - documented)}"


def test_console_trusts_forwarded_addresses_from_the_compose_gateway(compose: dict) -> None:
    """Behind compose every connection comes from the network's gateway; without trusting it for
    X-Forwarded-For every operator would share one address for login throttling."""
    import ipaddress

    from skintriage.settings import parse_networks

    value = compose["services"]["console"]["environment"]["CONSOLE_TRUSTED_PROXIES"]
    default = re.fullmatch(r"\$\{CONSOLE_TRUSTED_PROXIES:-([^}]+)\}", value)
    assert default, "CONSOLE_TRUSTED_PROXIES should default to the gateway pool and stay overridable in .env"
    networks = parse_networks(default.group(1))
    gateway = ipaddress.ip_address("172.18.0.1")  # a typical compose network's gateway
    assert any(gateway in net for net in networks if net.version == 4)
