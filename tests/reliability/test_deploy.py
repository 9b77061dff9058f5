"""deploy/: every setting the manifests, the compose file and the image set is a setting the
service knows (it refuses unknown TRIGGERS_* variables at start, so a typo would stop every
replica), the commands they run exist, and the Kubernetes manifests render."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from svc.cli import COMMANDS
from svc.config import describe_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
FILES = [*DEPLOY.glob("kubernetes/*.yaml"), DEPLOY / "compose.yaml", DEPLOY / "Dockerfile"]
VARIABLE = re.compile(r"\b((?:TRIGGERS|OTEL)_[A-Z0-9_]+|NATS_URL|REDIS_URL)\b")
# Read by the OpenTelemetry exporters themselves, not by svc/config.py.
OTEL_OWN = re.compile(r"OTEL_EXPORTER_OTLP_[A-Z_]+")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_variable_named_is_a_setting(path: Path) -> None:
    known = {info.env for info in describe_settings()}
    named = set(VARIABLE.findall(path.read_text()))
    unknown = {v for v in named - known if not OTEL_OWN.fullmatch(v)}
    assert not unknown, f"{path.name} names variables the service does not know: {unknown}"


def test_the_commands_they_run_exist() -> None:
    commands = {c.name for c in COMMANDS}
    compose = (DEPLOY / "compose.yaml").read_text()
    assert '"-m", "svc", "health"' in compose and "health" in commands
    assert 'CMD ["run"]' in (DEPLOY / "Dockerfile").read_text() and "run" in commands


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_kubernetes_manifests_render() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "kubernetes")],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    kinds = re.findall(r"^kind: (\w+)$", rendered, re.MULTILINE)
    assert sorted(kinds) == [
        "ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service"
    ]
    assert "replicas: 3" in rendered and "maxUnavailable: 1" in rendered
    assert rendered.count("grpc:") == 3  # readiness, liveness and startup probes
