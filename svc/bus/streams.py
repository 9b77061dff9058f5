"""Creates, or brings up to date, the JetStream streams and the KV bucket the service uses.

Safe to run from every replica at start, at the same time: creating a stream that already
exists with the same configuration is a no-op for JetStream, and an existing stream is only
updated in the fields this service owns (subjects, duplicate window, KV history, the decisions
stream's age and size limits), so limits an
operator set by hand (max age, replicas, ...) are kept.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from svc.config import Settings

logger = logging.getLogger(__name__)

# JetStream's error code for "stream name already in use with a different configuration":
# another replica created the stream between our lookup and our create.
STREAM_NAME_IN_USE = 10058
# Each stream is looked up, then created or updated; a race with another replica costs one
# more round; more than this many means something keeps changing it under us.
ENSURE_ATTEMPTS = 3
# How nats.py names the stream behind a KV bucket (nats.js.kv.KV_STREAM_TEMPLATE).
KV_STREAM = "KV_{bucket}"


class StreamSetupError(RuntimeError):
    """A stream or the KV bucket could not be created or updated."""


class NameCollisionError(StreamSetupError, ValueError):
    """Two settings name the same stream, or subject spaces that overlap."""


@dataclass(frozen=True)
class _Owned:
    """One stream as this service wants it: the subjects it owns and the fields it sets."""

    setting: str  # which setting names the stream, for error messages
    name: str
    subjects: tuple[str, ...]
    duplicate_window_s: float | None = None  # None: the server's default, not managed
    history: int | None = None  # KV buckets only: values kept per key
    max_age_s: float | None = None  # None: the server's default (no limit), not managed
    max_bytes: int | None = None  # None: the server's default (no limit), not managed


def desired_streams(settings: Settings) -> list[_Owned]:
    """Every stream the service needs, derived from the settings in one place."""
    streams = [
        _Owned("events_stream", settings.events_stream, (f"{settings.events_subject_prefix}.>",)),
        _Owned(
            "actions_stream",
            settings.actions_stream,
            (f"{settings.actions_subject_prefix}.>",),
            duplicate_window_s=settings.actions_duplicate_window_s,
        ),
        _Owned("dead_letter_stream", settings.dead_letter_stream, (settings.dead_letter_subject,)),
        _Owned(
            "automations_bucket",
            KV_STREAM.format(bucket=settings.automations_bucket),
            (f"$KV.{settings.automations_bucket}.>",),
            history=1,
        ),
    ]
    if settings.decisions_enabled:
        streams.append(
            _Owned(
                "decisions_stream",
                settings.decisions_stream,
                (f"{settings.decisions_subject_prefix}.>",),
                max_age_s=settings.decisions_max_age_s,
                max_bytes=settings.decisions_max_bytes,
            )
        )
    return streams


def subjects_overlap(a: str, b: str) -> bool:
    """True when some subject matches both patterns (tokens, `*` and a trailing `>`)."""
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right, strict=False):
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(left) == len(right)


def check_names(settings: Settings) -> None:
    """Refuse settings under which two streams would share a name or a subject.

    JetStream would refuse most of these too, but with a message that names neither setting;
    a dead-letter subject inside the events subjects it would even accept, and the consumer
    would then read its own dead letters.
    """
    streams = desired_streams(settings)
    seen: dict[str, _Owned] = {}
    for stream in streams:
        other = seen.setdefault(stream.name, stream)
        if other is not stream:
            raise NameCollisionError(
                f"settings {other.setting} and {stream.setting} both give stream name "
                f"{stream.name!r}; give each its own name"
            )
    for i, first in enumerate(streams):
        for second in streams[i + 1 :]:
            for a in first.subjects:
                for b in second.subjects:
                    if subjects_overlap(a, b):
                        raise NameCollisionError(
                            f"subjects {a!r} (from {first.setting}) and {b!r} (from "
                            f"{second.setting}) overlap, so one message would belong to both "
                            "streams; choose subject prefixes that do not contain one another"
                        )


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create or update the events, actions and dead-letter streams and the automations bucket.

    Idempotent, and safe to call from several replicas at once. Raises NameCollisionError for
    settings that collide, StreamSetupError when JetStream refuses a stream (for example
    because another stream, not ours, already takes its subjects).
    """
    check_names(settings)
    for stream in desired_streams(settings):
        await _ensure(js, stream, settings.stream_replicas)


async def _ensure(js: JetStreamContext, stream: _Owned, replicas: int = 1) -> None:
    for _ in range(ENSURE_ATTEMPTS):
        try:
            current = (await js.stream_info(stream.name)).config
        except NotFoundError:
            if await _create(js, stream, replicas):
                return
            continue  # created by another replica meanwhile: look again, then update
        wanted = _updated(current, stream)
        if wanted != current:
            try:
                await js.update_stream(wanted)
            except BadRequestError as exc:
                raise _refused(stream, "update", exc) from exc
            logger.info("updated stream %s (%s)", stream.name, ", ".join(stream.subjects))
        return
    raise StreamSetupError(
        f"stream {stream.name!r} kept changing while it was being set up "
        f"({ENSURE_ATTEMPTS} attempts); is another deployment using the same name?"
    )


async def _create(js: JetStreamContext, stream: _Owned, replicas: int = 1) -> bool:
    """Create the stream (with `replicas` copies on a cluster); False when another replica
    created it with a different config."""
    try:
        if stream.history is not None:
            bucket = stream.name.removeprefix(KV_STREAM.format(bucket=""))
            await js.create_key_value(
                KeyValueConfig(bucket=bucket, history=stream.history, replicas=replicas)
            )
        else:
            await js.add_stream(_new_config(stream, replicas))
    except BadRequestError as exc:
        if exc.err_code == STREAM_NAME_IN_USE:
            return False
        raise _refused(stream, "create", exc) from exc
    logger.info("created stream %s (%s)", stream.name, ", ".join(stream.subjects))
    return True


def _new_config(stream: _Owned, replicas: int = 1) -> StreamConfig:
    config = StreamConfig(name=stream.name, subjects=list(stream.subjects), num_replicas=replicas)
    if stream.duplicate_window_s is not None:
        config.duplicate_window = stream.duplicate_window_s
    if stream.max_age_s is not None:
        config.max_age = stream.max_age_s
    if stream.max_bytes is not None:
        config.max_bytes = stream.max_bytes
    return config


def _updated(current: StreamConfig, stream: _Owned) -> StreamConfig:
    """`current` with the fields this service owns set as it wants them, the rest kept."""
    changes: dict[str, object] = {}
    if sorted(current.subjects or []) != sorted(stream.subjects):
        changes["subjects"] = list(stream.subjects)
    if stream.duplicate_window_s is not None and not _same_seconds(
        current.duplicate_window, stream.duplicate_window_s
    ):
        changes["duplicate_window"] = stream.duplicate_window_s
    if stream.history is not None and current.max_msgs_per_subject != stream.history:
        changes["max_msgs_per_subject"] = stream.history
    if stream.max_age_s is not None and not _same_seconds(current.max_age, stream.max_age_s):
        changes["max_age"] = stream.max_age_s
    if stream.max_bytes is not None and current.max_bytes != stream.max_bytes:
        changes["max_bytes"] = stream.max_bytes
    return dataclasses.replace(current, **changes) if changes else current


def _same_seconds(a: float | None, b: float) -> bool:
    # the server keeps nanoseconds; nats.py hands them back as float seconds
    return a is not None and round(a * 1e9) == round(b * 1e9)


def _refused(stream: _Owned, verb: str, exc: BadRequestError) -> StreamSetupError:
    return StreamSetupError(
        f"JetStream refused to {verb} stream {stream.name!r} (setting {stream.setting}) on "
        f"subjects {', '.join(stream.subjects)}: {exc.description} (error {exc.err_code}); "
        "if another stream already takes these subjects, change the subject prefix settings"
    )
