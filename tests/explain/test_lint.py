"""Lint on load: warnings (not errors) about an accepted automation, from the domain rules to
the admin API's `warnings` and `python -m svc automations load`, against the real service."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from svc.domain.automations import parse_automation
from svc.domain.lint import lint_automation
from tests.explain.support import Running, automation, reactive

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def warnings_of(trigger: dict[str, Any]) -> list[str]:
    return lint_automation(parse_automation(automation(trigger)))


def test_a_trigger_matching_its_own_triggered_events_is_a_firing_loop() -> None:
    (warning,) = warnings_of(reactive("prefect.automation.*", match={"prefect.resource.id": "prefect.automation.*"}))
    assert "firing loop" in warning


def test_a_nested_trigger_sees_its_automations_composite_firing_without_a_posture() -> None:
    """SEMANTICS 7.3: a composite's state-change event has no `prefect.posture` label, so a
    nested trigger that requires one is no loop."""
    nested = {"type": "compound", "require": "any", "within": None, "triggers": [
        reactive("prefect.automation.triggered", match={"prefect.posture": "Reactive"})]}
    assert warnings_of(nested) == []
    loose = {"type": "compound", "require": "any", "within": None, "triggers": [
        reactive("prefect.automation.triggered")]}
    assert any("firing loop" in w for w in warnings_of(loose))


def test_a_trigger_with_no_expect_and_no_match_matches_every_event() -> None:
    everything = warnings_of({"type": "event", "posture": "Reactive"})
    assert any("matches every event" in w for w in everything)
    assert warnings_of({"type": "event", "posture": "Reactive", "match": {"a": "b"}}) == []


def test_proactive_after_without_for_each_shares_one_bucket() -> None:
    (warning,) = warnings_of({"type": "event", "posture": "Proactive", "after": ["run.started"],
                              "expect": ["run.done"], "within": 60})
    assert "shares one bucket" in warning


def test_proactive_after_wildcard_covering_an_expected_state_is_flagged() -> None:
    """SEMANTICS 6 step 6: the completion both satisfies and re-arms the window."""
    (warning,) = warnings_of({"type": "event", "posture": "Proactive",
                              "after": ["prefect.flow-run.*"],
                              "expect": ["prefect.flow-run.Completed"],
                              "for_each": ["prefect.resource.id"], "within": 600})
    assert "'prefect.flow-run.*' also matches the expected 'prefect.flow-run.Completed'" in warning


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_the_examples_draw_no_warning(path: Path) -> None:
    """A heartbeat (`after X, expect X`) is meant and not flagged."""
    assert lint_automation(parse_automation(json.loads(path.read_text()))) == []


async def test_the_service_returns_warnings_with_the_accepted_automation(live: Running) -> None:
    document = automation({"type": "event", "posture": "Reactive"}, enabled=False)
    created = await live.admin.load(document)
    assert any("matches every event" in w for w in created.warnings)
    assert (await live.admin.get(created.id))["id"] == created.id  # accepted and stored
    enabled = await live.admin.set_enabled(created.id, True)
    assert any("matches every event" in w for w in enabled.warnings)


async def test_automations_load_prints_the_warnings(live: Running, tmp_path: Path) -> None:
    loop = automation(reactive("prefect.automation.triggered"), id=str(uuid.uuid4()))
    path = tmp_path / "loop.json"
    path.write_text(json.dumps(loop))
    env = {**os.environ, "TRIGGERS_GRPC_ADDRESS": live.settings.grpc_address,
           "COLUMNS": "400"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "svc", "automations", "load", str(path),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    text = " ".join(out.decode().split())
    assert "created" in text and "warning:" in text and "firing loop" in text

