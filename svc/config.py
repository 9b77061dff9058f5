"""The service's settings: one frozen object, read from the environment in one place."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Every variable this module owns starts with this, except the two server URLs, whose plain
# names are what the NATS and Redis tools themselves recognise.
ENV_PREFIX = "TRIGGERS_"

# Stream, consumer and KV bucket names: JetStream refuses whitespace, '.', '*', '>' and path
# separators in them; KV bucket names are further limited to this set.
_NATS_NAME = re.compile(r"[A-Za-z0-9_-]+")
# A subject (or subject prefix) we publish on: dot-separated tokens, none empty, no wildcards.
_SUBJECT = re.compile(r"[^\s.*>]+(\.[^\s.*>]+)*")
# The Redis key prefix must not contain braces: every key of a trigger carries a
# `{<trigger id>}` hash tag, and a brace in the prefix would become the hash tag instead.
_KEY_PREFIX = re.compile(r"[^\s{}]+")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


Parser = Callable[[str, str], Any]


def _positive_int(env: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise SettingsError(f"{env} must be a positive integer, got {raw!r}")
    return value


def _float_at_least(minimum: float, *, inclusive: bool, what: str) -> Parser:
    def parse(env: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
        if not ok:
            raise SettingsError(f"{env} must be {what} number of seconds, got {raw!r}")
        return value

    return parse


_positive_seconds = _float_at_least(0.0, inclusive=False, what="a positive")
_non_negative_seconds = _float_at_least(0.0, inclusive=True, what="a non-negative")


def _matching(pattern: re.Pattern[str], what: str) -> Parser:
    def parse(env: str, raw: str) -> str:
        if not pattern.fullmatch(raw):
            raise SettingsError(f"{env} must be {what}, got {raw!r}")
        return raw

    return parse


def _url(*schemes: str) -> Parser:
    def parse(env: str, raw: str) -> str:
        scheme, sep, rest = raw.partition("://")
        if not sep or scheme not in schemes or not rest:
            expected = " or ".join(f"{s}://..." for s in schemes)
            raise SettingsError(f"{env} must be a URL like {expected}, got {raw!r}")
        return raw

    return parse


def _address(env: str, raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f"{env} must be host:port (port 0-65535), got {raw!r}")
    return raw


def _one_of(*choices: str) -> Parser:
    def parse(env: str, raw: str) -> str:
        if raw not in choices:
            raise SettingsError(f"{env} must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return parse


def _path(env: str, raw: str) -> str:
    return raw


def _secret(env: str, raw: str) -> str:
    if raw != raw.strip():
        raise SettingsError(f"{env} has leading or trailing whitespace; remove it")
    return raw


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _boolean(env: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{env} must be one of {', '.join(_TRUE + _FALSE)}, got {raw!r}")


def setting(default: Any, help: str, parse: Parser, env: str | None = None) -> Any:
    """Declare one setting: its default, its description, how to parse it, and its variable.

    The variable defaults to TRIGGERS_<FIELD NAME>; `env` overrides that.
    """
    return field(default=default, metadata={"help": help, "parse": parse, "env": env})


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told from outside. Built once, then passed down."""

    nats_url: str | None = setting(
        None,
        "NATS server URL. Unset: an embedded nats-server with JetStream is started.",
        _url("nats", "tls", "ws", "wss"),
        env="NATS_URL",
    )
    redis_url: str | None = setting(
        None,
        "Redis server URL. Unset: an embedded redis-server is started.",
        _url("redis", "rediss", "unix"),
        env="REDIS_URL",
    )
    key_prefix: str = setting(
        "triggers",
        "Prefix of every Redis key, so several deployments can share one Redis.",
        _matching(_KEY_PREFIX, "a non-empty prefix without whitespace or braces"),
    )
    events_stream: str = setting(
        "EVENTS",
        "JetStream stream that holds incoming events.",
        _matching(_NATS_NAME, "a stream name of letters, digits, '_' or '-'"),
    )
    events_subject_prefix: str = setting(
        "events",
        "Events are published on `<prefix>.<anything>`.",
        _matching(_SUBJECT, "a subject prefix without wildcards or empty tokens"),
    )
    actions_stream: str = setting(
        "ACTIONS",
        "JetStream stream that receives triggered actions.",
        _matching(_NATS_NAME, "a stream name of letters, digits, '_' or '-'"),
    )
    actions_subject_prefix: str = setting(
        "actions",
        "Triggered actions go to `<prefix>.<action type>.<automation id>`.",
        _matching(_SUBJECT, "a subject prefix without wildcards or empty tokens"),
    )
    actions_duplicate_window_s: float = setting(
        600.0,
        "Seconds the actions stream remembers a triggered action's id (`Nats-Msg-Id`) to drop "
        "a re-publish; must cover the longest crash recovery (restart plus outbox drain).",
        _positive_seconds,
    )
    dead_letter_subject: str = setting(
        "events-dead-letter",
        "Subject that receives undecodable or invalid events, with the reason.",
        _matching(_SUBJECT, "a subject without wildcards or empty tokens"),
    )
    dead_letter_stream: str = setting(
        "DEAD_LETTER",
        "JetStream stream that keeps the messages sent to the dead-letter subject.",
        _matching(_NATS_NAME, "a stream name of letters, digits, '_' or '-'"),
    )
    automations_bucket: str = setting(
        "automations",
        "JetStream KV bucket that holds automation definitions.",
        _matching(_NATS_NAME, "a bucket name of letters, digits, '_' or '-'"),
    )
    consumer_name: str = setting(
        "triggers",
        "Durable consumer on the events stream, shared by every replica.",
        _matching(_NATS_NAME, "a consumer name of letters, digits, '_' or '-'"),
    )
    fetch_batch: int = setting(
        100,
        "Most events fetched from the consumer in one pull.",
        _positive_int,
    )
    fetch_timeout_s: float = setting(
        1.0,
        "Seconds one fetch waits for events before returning empty; also bounds how long a "
        "shutdown waits for the fetch under way.",
        _positive_seconds,
    )
    max_ack_pending: int = setting(
        1000,
        "Most events handed out to the consumer and not yet acknowledged.",
        _positive_int,
    )
    ack_wait_s: float = setting(
        30.0,
        "Seconds JetStream waits for an acknowledgement before redelivering an event.",
        _positive_seconds,
    )
    consumer_backoff_initial_s: float = setting(
        0.5,
        "Seconds the consumer pauses after a failed batch (which it naks with this delay); "
        "doubles with each consecutive failure.",
        _positive_seconds,
    )
    consumer_backoff_max_s: float = setting(
        30.0,
        "Upper bound, in seconds, of the consumer's pause and redelivery delay after failures.",
        _positive_seconds,
    )
    periodic_interval_s: float = setting(
        5.0,
        "Seconds between periodic evaluations (proactive triggers, followers, sweeping).",
        _positive_seconds,
    )
    expired_bucket_buffer_s: float = setting(
        60.0,
        "Seconds a bucket is kept after its window ends before it is swept.",
        _non_negative_seconds,
    )
    data_dir: str | None = setting(
        None,
        "Directory for the embedded servers' data. Unset: a temporary directory.",
        _path,
    )
    grpc_address: str = setting(
        "127.0.0.1:50051",
        "`host:port` the gRPC admin API listens on.",
        _address,
    )
    decisions_enabled: bool = setting(
        True,
        "Whether every evaluation appends its decisions (automation, trigger, event, decision, "
        "bucket before and after) to the decisions stream, for `python -m svc why`.",
        _boolean,
    )
    decisions_stream: str = setting(
        "DECISIONS",
        "JetStream stream that keeps the decision records (bounded by the two limits below).",
        _matching(_NATS_NAME, "a stream name of letters, digits, '_' or '-'"),
    )
    decisions_subject_prefix: str = setting(
        "decisions",
        "Decision records go to `<prefix>.<automation id>`.",
        _matching(_SUBJECT, "a subject prefix without wildcards or empty tokens"),
    )
    decisions_max_age_s: float = setting(
        86400.0,
        "Seconds the decisions stream keeps a record before discarding it.",
        _positive_seconds,
    )
    decisions_max_bytes: int = setting(
        256 * 1024 * 1024,
        "Most bytes the decisions stream holds; the oldest records are discarded beyond it.",
        _positive_int,
    )
    prometheus_address: str | None = setting(
        None,
        "`host:port` on which metrics are served for Prometheus scraping (`/metrics`). Unset: "
        "not served.",
        _address,
    )
    traces_exporter: str = setting(
        "none",
        "Where spans go: `otlp` (configured by the standard OTEL_EXPORTER_OTLP_* variables), "
        "`console` or `none`.",
        _one_of("otlp", "console", "none"),
        env="OTEL_TRACES_EXPORTER",
    )
    metrics_exporter: str = setting(
        "none",
        "Where metrics go: `otlp`, `console` or `none`.",
        _one_of("otlp", "console", "none"),
        env="OTEL_METRICS_EXPORTER",
    )
    service_name: str = setting(
        "triggers",
        "The `service.name` of spans and metrics.",
        _matching(re.compile(r"\S+"), "a name without whitespace"),
        env="OTEL_SERVICE_NAME",
    )
    lease_ttl_ms: int = setting(
        10000,
        "Milliseconds the periodic-evaluation lease outlives its holder's last renewal: when "
        "the holder dies, another replica takes periodic and proactive evaluation over within "
        "this plus one renew interval.",
        _positive_int,
    )
    lease_renew_interval_ms: int = setting(
        2000,
        "Milliseconds between renewals of the periodic-evaluation lease by its holder, and "
        "between attempts to take it by the other replicas; at most half the lease TTL.",
        _positive_int,
    )
    dependency_check_interval_s: float = setting(
        1.0,
        "Seconds between checks that Redis and NATS answer; while either does not, the "
        "replica stops fetching events and its health reports NOT_SERVING.",
        _positive_seconds,
    )
    dependency_timeout_s: float = setting(
        5.0,
        "Seconds a Redis command, or a dependency check, may take before it counts as failed.",
        _positive_seconds,
    )
    redis_cluster: bool = setting(
        False,
        "Whether REDIS_URL names a node of a Redis Cluster (the client finds the others).",
        _boolean,
    )
    stream_replicas: int = setting(
        1,
        "Replicas of each stream and of the automations bucket the service creates (3 on a "
        "NATS cluster of three or more); existing streams keep theirs.",
        _positive_int,
    )
    health_address: str | None = setting(
        None,
        "`host:port` of a plaintext listener serving only gRPC health checks, for probes "
        "that cannot use the admin API's TLS or token. Unset: health is on the admin API.",
        _address,
    )
    admin_tls_cert_file: str | None = setting(
        None,
        "PEM certificate chain of the admin API. Set with the key file: the API serves TLS.",
        _path,
    )
    admin_tls_key_file: str | None = setting(
        None, "PEM private key of the admin API's certificate.", _path
    )
    admin_tls_client_ca_file: str | None = setting(
        None,
        "PEM CA bundle: every admin client must present a certificate it signed (mTLS); "
        "probes then use TRIGGERS_HEALTH_ADDRESS.",
        _path,
    )
    admin_token: str | None = setting(
        None,
        "Bearer token every admin call but health checks must carry (`authorization: Bearer "
        "<token>`); a call without it is answered UNAUTHENTICATED.",
        _secret,
    )
    nats_creds_file: str | None = setting(
        None,
        "NATS user credentials file (JWT and NKey seed). User and password, or a token, "
        "can go in NATS_URL instead.",
        _path,
    )
    nats_tls_ca_file: str | None = setting(
        None, "PEM CA bundle that verifies the NATS servers (with `tls://` URLs).", _path
    )
    nats_tls_cert_file: str | None = setting(
        None, "PEM client certificate for NATS servers that require one.", _path
    )
    nats_tls_key_file: str | None = setting(
        None, "PEM private key of the NATS client certificate.", _path
    )
    redis_username: str | None = setting(
        None, "Redis ACL user name (AUTH); may also be given in REDIS_URL.", _secret
    )
    redis_password: str | None = setting(
        None, "Redis password (AUTH); kept out of REDIS_URL, so it is not logged.", _secret
    )
    redis_tls_ca_file: str | None = setting(
        None, "PEM CA bundle that verifies Redis (with a `rediss://` URL).", _path
    )
    redis_tls_cert_file: str | None = setting(
        None, "PEM client certificate for a Redis that requires one.", _path
    )
    redis_tls_key_file: str | None = setting(
        None, "PEM private key of the Redis client certificate.", _path
    )

    def named_apart(self, tag: str) -> Settings:
        """These settings with every name they share with other deployments on the same NATS
        and Redis tagged with `tag` (letters, digits, '_' or '-'): the Redis key prefix,
        every stream, subject prefix, the KV bucket and the durable consumer. Several such
        copies run side by side without seeing each other's events, state or actions (tests,
        the benchmark's workloads)."""
        if not _NATS_NAME.fullmatch(tag):
            raise SettingsError(f"a tag must be letters, digits, '_' or '-', got {tag!r}")
        changes: dict[str, str] = {"key_prefix": f"{self.key_prefix}:{tag}"}
        for name in _NAMED_APART_NAMES:
            changes[name] = f"{getattr(self, name)}-{tag}"
        for name in _NAMED_APART_SUBJECTS:
            changes[name] = f"{tag}.{getattr(self, name)}"
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read every setting from `environ`; unset or empty variables keep their default.

        Raises SettingsError naming the variable for a value that does not parse, and for a
        TRIGGERS_* variable that names no setting (most likely a typo that would otherwise
        be silently ignored).
        """
        known = {env_name(f) for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(k for k in known if k.startswith(ENV_PREFIX)))}"
            )
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f), "")
            if raw != "":
                values[f.name] = f.metadata["parse"](env_name(f), raw)
        return cls(**values)


# What Settings.named_apart tags: names of NATS objects, then subjects (prefixes).
_NAMED_APART_NAMES = (
    "events_stream", "actions_stream", "dead_letter_stream", "decisions_stream",
    "automations_bucket", "consumer_name",
)  # fmt: skip
_NAMED_APART_SUBJECTS = (
    "events_subject_prefix", "actions_subject_prefix", "dead_letter_subject",
    "decisions_subject_prefix",
)  # fmt: skip


def env_name(f: dataclasses.Field[Any]) -> str:
    """The environment variable that sets field `f`."""
    return f.metadata["env"] or ENV_PREFIX + f.name.upper()


@dataclass(frozen=True)
class SettingInfo:
    """One row of the settings table: for documentation and `--help` output."""

    name: str
    env: str
    default: Any
    help: str


def describe_settings() -> list[SettingInfo]:
    """Every setting with its environment variable, default and description, in field order."""
    return [
        SettingInfo(name=f.name, env=env_name(f), default=f.default, help=f.metadata["help"])
        for f in dataclasses.fields(Settings)
    ]


def settings_markdown() -> str:
    """The settings as a Markdown table, as shown in the README."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for info in describe_settings():
        default = "(unset)" if info.default is None else f"`{info.default}`"
        lines.append(f"| `{info.env}` | {default} | {info.help} |")
    return "\n".join(lines) + "\n"
