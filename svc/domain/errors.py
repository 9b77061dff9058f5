"""Validation errors of the domain model, each naming the field path and what is wrong."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError as PydanticValidationError


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: `path` is dotted (`trigger.triggers.0.within`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class FieldValueError(ValueError):
    """Raised by a validator to blame `field`, a dotted path below the value it validates.

    A model validator's error otherwise points at the whole model (`trigger`), not at the
    field the user has to change (`trigger.within`).
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class DomainValidationError(ValueError):
    """Input that does not fit the model; `errors` lists every offending field."""

    what = "input"

    def __init__(self, errors: Sequence[FieldError]):
        self.errors = tuple(errors)
        super().__init__(self._summary())

    def _summary(self) -> str:
        details = "; ".join(str(e) for e in self.errors)
        return f"invalid {self.what}: {details}"

    @property
    def first_path(self) -> str:
        return self.errors[0].path if self.errors else ""

    @classmethod
    def from_pydantic(cls, exc: PydanticValidationError, prefix: str = "") -> DomainValidationError:
        return cls([_field_error(err, prefix) for err in exc.errors(include_url=False)])

    @classmethod
    def single(cls, path: str, message: str) -> DomainValidationError:
        return cls([FieldError(path, message)])


class InvalidEvent(DomainValidationError):
    """An event that cannot be decoded or validated (dead-lettered, never evaluated)."""

    what = "event"


class InvalidAutomation(DomainValidationError):
    """An automation that the admin API refuses with INVALID_ARGUMENT."""

    what = "automation"


def _field_error(err: dict, prefix: str) -> FieldError:
    parts: Iterable[str] = (str(p) for p in err.get("loc", ()) if not _is_union_tag(p))
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldValueError):
        parts = (*parts, cause.field)
    path = ".".join(p for p in (prefix, *parts) if p)
    message = err.get("msg", "invalid value")
    # pydantic prefixes messages raised by our own validators with "Value error, "
    message = message.removeprefix("Value error, ")
    return FieldError(path, message)


def _is_union_tag(part: object) -> bool:
    # Tagged-union branches appear in pydantic locations as their tag, which the models write
    # in angle brackets ("<event>"); they say nothing about the user's document.
    return isinstance(part, str) and part.startswith("<")
