"""The Docker files agree with the code: services, ports, commands, health checks and environment names.

No Docker engine runs here, so these read the files (PyYAML for the compose file) and check them against
pyproject's console scripts and the settings classes' fields.
"""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.hive.settings import HiveSettings
from services.queen.settings import QueenSettings
from tests.support import REPO

SETTINGS: dict[str, type[BaseSettings]] = {"hive": HiveSettings, "queen": QueenSettings}
DOCKERFILES = {"hive": REPO / "Dockerfile.hive", "queen": REPO / "Dockerfile.queen"}
PORTS = {"hive": 9200, "queen": 8080}
SCRIPTS = {"hive": "rbee-hive", "queen": "rbee-queen"}


def env_names(settings: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads: prefix + field name, and its validation aliases."""
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    names: set[str] = set()
    for name, info in settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(prefix + name.upper())
    return names


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def kind_of(service: str) -> str:
    return "queen" if service == "queen" else "hive"


class Dockerfile:
    """The final stage of a Dockerfile: instructions as (keyword, argument) with continuations joined."""

    def __init__(self, path: Path) -> None:
        text = re.sub(r"\\\n\s*", " ", path.read_text())
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        self.all: list[tuple[str, str]] = []
        for line in lines:
            keyword, _, arg = line.partition(" ")
            self.all.append((keyword.upper(), arg.strip()))
        last_from = max(i for i, (keyword, _) in enumerate(self.all) if keyword == "FROM")
        self.final = self.all[last_from:]
        self.stages = [arg for keyword, arg in self.all if keyword == "FROM"]

    def args(self, keyword: str) -> list[str]:
        return [arg for k, arg in self.final if k == keyword]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for arg in self.args("ENV"):
            for token in shlex.split(arg):
                key, _, value = token.partition("=")
                env[key] = value
        return env


@pytest.fixture(params=["hive", "queen"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_console_scripts_exist_and_point_at_main() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for script in (*SCRIPTS.values(), "rbee-keeper"):
        module, _, func = scripts[script].partition(":")
        assert callable(getattr(importlib.import_module(module), func)), script


def test_dockerfile_basics(kind: str) -> None:
    df = Dockerfile(DOCKERFILES[kind])
    assert all(stage.split()[0].startswith("python:3.11-slim") for stage in df.stages)
    assert any("pip install" in arg and arg.endswith(" .") for k, arg in df.all if k == "RUN")
    users = df.args("USER")
    assert users and users[-1] not in ("root", "0")
    assert df.args("EXPOSE") == [str(PORTS[kind])]
    cmd = df.args("CMD")[-1]
    assert cmd == f'["{SCRIPTS[kind]}"]'


def test_dockerfile_env_matches_settings(kind: str) -> None:
    df = Dockerfile(DOCKERFILES[kind])
    env = df.env()
    settings = SETTINGS[kind]
    prefix = kind.upper() + "_"
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert int(env.get(f"{prefix}PORT", settings.model_fields["port"].default)) == PORTS[kind]
    assert settings.model_fields["port"].default == PORTS[kind]
    ours = {name for name in env if name.startswith(("HIVE_", "QUEEN_", "HF_", "RBEE_"))}
    assert ours <= env_names(settings), ours - env_names(settings)


def test_dockerfile_healthcheck_uses_python_and_the_right_port(kind: str) -> None:
    df = Dockerfile(DOCKERFILES[kind])
    (check,) = df.args("HEALTHCHECK")
    assert "curl" not in check and "urllib.request" in check and "/healthz" in check
    port_env = f"{kind.upper()}_PORT"
    assert f"os.environ.get('{port_env}', '{PORTS[kind]}')" in check


def test_hive_models_volume_is_the_models_dir() -> None:
    df = Dockerfile(DOCKERFILES["hive"])
    assert df.args("VOLUME") == ['["/models"]']
    assert df.env()["HIVE_MODELS_DIR"] == "/models"
    assert any("chown" in arg and "/models" in arg for k, arg in df.final if k == "RUN")


def test_compose_services_ports_and_healthchecks() -> None:
    services = compose()["services"]
    assert set(services) == {"queen", "hive-a", "hive-b"}
    for name, service in services.items():
        kind = kind_of(name)
        assert service["build"]["dockerfile"] == DOCKERFILES[kind].name
        assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        env = service["environment"]
        port = int(env.get(f"{kind.upper()}_PORT", PORTS[kind]))
        assert port == PORTS[kind]
        assert env[f"{kind.upper()}_HOST"] == "0.0.0.0"
        published = [str(p) for p in service["ports"]]
        assert all(p.endswith(f":{port}") for p in published), published
        test = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz" in test and "curl" not in test
    assert [str(p) for p in services["queen"]["ports"]] == ["8080:8080"]
    assert len({str(p) for s in services.values() for p in s["ports"]}) == 3  # no host port clash


def test_compose_hives_register_with_the_queen_and_keep_their_own_volume() -> None:
    data = compose()
    services = data["services"]
    queen_port = PORTS["queen"]
    volumes = set()
    for name in ("hive-a", "hive-b"):
        service = services[name]
        env = service["environment"]
        assert env["HIVE_ID"] == name
        assert env["HIVE_QUEEN_URL"] == f"http://queen:{queen_port}"
        assert env["HIVE_PUBLIC_URL"] == f"http://{name}:{PORTS['hive']}"
        assert env["HF_TOKEN"] == "${HF_TOKEN:-}"
        assert service["depends_on"]["queen"]["condition"] == "service_healthy"
        (volume,) = service["volumes"]
        source, _, target = volume.partition(":")
        assert target == env["HIVE_MODELS_DIR"] == "/models"
        assert source in data["volumes"]
        volumes.add(source)
    assert len(volumes) == 2


def test_compose_env_names_are_settings_fields() -> None:
    for name, service in compose()["services"].items():
        kind = kind_of(name)
        known = env_names(SETTINGS[kind])
        for key in service["environment"]:
            if key.startswith(("HIVE_", "QUEEN_", "HF_", "RBEE_")):
                assert key in known, f"{name}: {key} is not a {SETTINGS[kind].__name__} setting"


def test_env_names_helper_sees_prefixes_and_aliases() -> None:
    hive = env_names(HiveSettings)
    assert {"HIVE_ID", "HIVE_QUEEN_URL", "HIVE_PUBLIC_URL", "HF_TOKEN", "HF_ENDPOINT", "RBEE_API_TOKEN"} <= hive
    assert "HIVE_HF_TOKEN" not in hive and "QUEEN_ORCHESTRATOR_ID" not in hive
    assert {"QUEEN_ORCHESTRATOR_ID", "QUEEN_HIVES", "RBEE_API_TOKEN"} <= env_names(QueenSettings)


def test_dockerignore_keeps_the_build_context_small_but_complete() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "models", "demo-run"} <= ignored
    for needed in ("pyproject.toml", "README.md", "shared", "services"):
        assert needed not in ignored
