"""Dockerfile and compose.yaml.

No container engine runs on this machine (`docker` is only a client, with no daemon to talk to), so no image
is built and no container started here. What is checked without one: each Dockerfile step is a command the
README's own quick start runs, and the build context keeps everything that install needs; compose.yaml passes
the Compose schema of `docker-compose config` (Debian's docker-compose 1.29, which parses and validates without
an engine) and fits this repository (every file it mounts exists, every variable it passes is one the gateway
reads, the addresses it wires are its services). Its Prometheus and Grafana files are checked in
tests/web/test_monitoring.py.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from tests.support import ROOT

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
DOCKER_COMPOSE = shutil.which("docker-compose")


def dockerfile_steps() -> list[tuple[str, str]]:
    """(instruction, argument) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, argument = line.partition(" ")
            steps.append((instruction.upper(), argument.strip()))
    return steps


def readme_quick_start() -> str:
    """The README's first shell block: how to install and run voicegate."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    return block.group(1)


def test_each_dockerfile_step_is_a_command_the_readme_runs():
    steps = dockerfile_steps()
    quick_start = readme_quick_start()
    (base,) = [arg for instruction, arg in steps if instruction == "FROM"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert base.startswith("python:3.11") and requires == ">=3.11"  # the oldest Python the project supports
    installs = [arg for instruction, arg in steps if instruction == "RUN" and "pip install" in arg]
    assert installs == ["python3 -m venv .venv && .venv/bin/pip install --no-cache-dir -e '.[local]'"]
    for command in ("python3 -m venv .venv", ".venv/bin/pip install -e '.[local]'", ".venv/bin/voicegate serve"):
        assert command in quick_start, command
    (cmd,) = [arg for instruction, arg in steps if instruction == "CMD"]
    assert cmd == '[".venv/bin/voicegate", "serve"]'
    env = dict(item.split("=", 1) for instruction, arg in steps if instruction == "ENV" for item in arg.split())
    assert env["HOST"] == "0.0.0.0" and env["VOICEGATE_DB"].startswith("/data/")  # reachable; store on the volume
    assert ("VOLUME", "/data") in steps and ("EXPOSE", env["PORT"]) in steps


def test_the_build_context_keeps_what_the_install_needs():
    """`pip install -e '.[local]'` needs pyproject.toml, the README it names and every package it finds."""
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", project["project"]["readme"], "gateway/static/index.html"]
    needed += [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for path in needed:
        assert (ROOT / path).exists(), path
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hits = [p for p in ignored for prefix in prefixes if fnmatch.fnmatch(prefix, p)]
        assert not hits, (path, hits)
    # And the things an image must not carry: a local virtualenv (another interpreter's paths) and stores.
    for path in (".venv", ".git", "voicegate.db", "tests"):
        assert any(fnmatch.fnmatch(path, p) for p in ignored), path


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose not installed (Debian package docker-compose)")
def test_compose_yaml_passes_the_compose_schema():
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    checked = subprocess.run([DOCKER_COMPOSE, "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=60)
    assert checked.returncode == 0, checked.stderr
    resolved = yaml.safe_load(checked.stdout)
    assert set(resolved["services"]) == {"gateway", "redis", "prometheus", "grafana"}
    # Names listed without a value pass the shell's variable when set, and nothing when not.
    assert resolved["services"]["gateway"]["environment"]["DEEPGRAM_API_KEY"] is None


def test_compose_fits_the_repository():
    from providers.settings import _ENV_NAMES, Settings
    from dataclasses import fields

    config = yaml.safe_load(COMPOSE.read_text())
    services = config["services"]
    gateway = services["gateway"]
    assert gateway["build"] == "." and DOCKERFILE.is_file()
    # Every file or directory a service mounts from here exists.
    for name, service in services.items():
        for volume in service.get("volumes", ()):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
    # Every variable passed to the gateway is one it reads (a typo would be silently ignored).
    known = {name for f in fields(Settings) for name in _ENV_NAMES.get(f.name, (f.name.upper(),))}
    passed = {entry.split("=", 1)[0] for entry in gateway["environment"]}
    unknown = {name for name in passed - known if not name.startswith("OTEL_")}
    assert not unknown, unknown
    values = dict(entry.split("=", 1) for entry in gateway["environment"] if "=" in entry)
    assert values["REDIS_URL"].startswith("redis://redis:") and "redis" in services
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    # A deploy's SIGTERM drains calls for DRAIN_SECONDS (120 s by default): docker's 10 s would cut them.
    grace = re.fullmatch(r"(\d+)s", gateway["stop_grace_period"])
    assert grace and int(grace.group(1)) > 120
