"""The service's NATS connection (svc.connections.connect_nats): a stop is not an outage."""

from __future__ import annotations

import logging

import pytest

from svc.config import Settings
from svc.connections import connect_nats


async def test_closing_the_connection_on_purpose_logs_no_lost_connection(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    for close in ("drain", "close"):
        nc = await connect_nats(Settings(nats_url=nats_url))
        with caplog.at_level(logging.INFO, logger="svc.connections"):
            await getattr(nc, close)()
        assert "connection lost" not in caplog.text, close
