"""Settings: defaults, parsing, error messages, and the README table kept in step."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from svc.config import Settings, SettingsError, describe_settings, settings_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings().nats_url is None and Settings().redis_url is None


def test_each_setting_is_read_from_its_variable() -> None:
    settings = Settings.from_env(
        {
            "NATS_URL": "nats://127.0.0.1:4222",
            "REDIS_URL": "redis://127.0.0.1:6379/2",
            "TRIGGERS_KEY_PREFIX": "staging",
            "TRIGGERS_FETCH_BATCH": "25",
            "TRIGGERS_ACK_WAIT_S": "2.5",
            "TRIGGERS_EXPIRED_BUCKET_BUFFER_S": "0",
            "TRIGGERS_EVENTS_SUBJECT_PREFIX": "prod.events",
            "TRIGGERS_GRPC_ADDRESS": "[::1]:6000",
            "UNRELATED": "ignored",
        }
    )
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.redis_url == "redis://127.0.0.1:6379/2"
    assert settings.key_prefix == "staging"
    assert settings.fetch_batch == 25
    assert settings.ack_wait_s == 2.5
    assert settings.expired_bucket_buffer_s == 0.0
    assert settings.events_subject_prefix == "prod.events"
    assert settings.grpc_address == "[::1]:6000"


def test_an_empty_variable_counts_as_unset() -> None:
    assert Settings.from_env({"NATS_URL": "", "TRIGGERS_FETCH_BATCH": ""}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TRIGGERS_FETCH_BATCH", "x", "TRIGGERS_FETCH_BATCH must be a positive integer, got 'x'"),
        ("TRIGGERS_MAX_ACK_PENDING", "0", "TRIGGERS_MAX_ACK_PENDING must be a positive integer"),
        ("TRIGGERS_ACK_WAIT_S", "0", "TRIGGERS_ACK_WAIT_S must be a positive number of seconds"),
        ("TRIGGERS_PERIODIC_INTERVAL_S", "nan", "TRIGGERS_PERIODIC_INTERVAL_S must be a positive"),
        ("TRIGGERS_EXPIRED_BUCKET_BUFFER_S", "-1", "must be a non-negative number of seconds"),
        ("NATS_URL", "localhost:4222", "NATS_URL must be a URL like nats://..."),
        ("REDIS_URL", "http://x", "REDIS_URL must be a URL like redis://..."),
        ("TRIGGERS_KEY_PREFIX", "a{b}", "TRIGGERS_KEY_PREFIX must be a non-empty prefix"),
        ("TRIGGERS_EVENTS_STREAM", "EV.ENTS", "TRIGGERS_EVENTS_STREAM must be a stream name"),
        ("TRIGGERS_ACTIONS_SUBJECT_PREFIX", "actions.>", "must be a subject prefix"),
        ("TRIGGERS_DEAD_LETTER_SUBJECT", "dead..letter", "must be a subject without"),
        ("TRIGGERS_GRPC_ADDRESS", "50051", "TRIGGERS_GRPC_ADDRESS must be host:port"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(variable, value, message) -> None:
    with pytest.raises(SettingsError, match=message.replace("{", r"\{").replace("(", r"\(")):
        Settings.from_env({variable: value})


def test_an_unknown_triggers_variable_is_refused_as_a_likely_typo() -> None:
    with pytest.raises(SettingsError, match="unknown setting.*TRIGGERS_FETCH_BACTH"):
        Settings.from_env({"TRIGGERS_FETCH_BACTH": "10"})


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().fetch_batch = 5  # type: ignore[misc]


def test_every_setting_is_described() -> None:
    infos = describe_settings()
    assert [i.name for i in infos] == [f.name for f in dataclasses.fields(Settings)]
    assert all(i.help for i in infos)
    assert {i.env for i in infos} >= {"NATS_URL", "REDIS_URL", "TRIGGERS_DATA_DIR"}


def test_readme_settings_table_matches_the_code() -> None:
    """The README's table is written out by hand; this keeps it in step with config.py."""
    assert settings_markdown() in README.read_text()


def test_named_apart_tags_every_name_shared_on_nats_and_redis() -> None:
    base = Settings.from_env({})
    one, two = base.named_apart("one"), base.named_apart("two")
    shared = [
        f.name
        for f in dataclasses.fields(Settings)
        if f.name.endswith(("_stream", "_subject", "_subject_prefix", "_bucket"))
        or f.name in ("consumer_name", "key_prefix")
    ]
    assert len(shared) == 11
    for name in shared:
        values = {getattr(base, name), getattr(one, name), getattr(two, name)}
        assert len(values) == 3, name
    # subjects of one copy never fall under another's wildcard
    assert not one.events_subject_prefix.startswith(f"{base.events_subject_prefix}.")
    # everything else is kept
    assert one.fetch_batch == base.fetch_batch and one.redis_url == base.redis_url


@pytest.mark.parametrize("tag", ["", "a.b", "a b", "a*", "a>", "{a}"])
def test_named_apart_refuses_a_tag_that_is_not_a_plain_name(tag: str) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({}).named_apart(tag)
