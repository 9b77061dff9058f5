"""Lua scripts: loaded once from package files, called by EVALSHA, reloaded on NOSCRIPT."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

_INCLUDE = re.compile(r'^--- @include "([^"]+)"$', re.MULTILINE)


def _read(name: str) -> str:
    return resources.files("svc.state").joinpath("lua").joinpath(name).read_text()


def _resolve(source: str) -> str:
    return _INCLUDE.sub(lambda m: _resolve(_read(m.group(1))), source)


@dataclass
class Script:
    """One `.lua` file; the number of KEYS is part of its name (`reactive-7.lua`), or `n`
    for a script that takes a whole batch's keys (`finish-n.lua`)."""

    name: str
    source: str = field(repr=False)
    sha: str = field(init=False)
    numkeys: int | None = field(init=False)  # None: any number

    def __post_init__(self) -> None:
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        count = self.name.rsplit("-", 1)[1]
        self.numkeys = None if count == "n" else int(count)

    @classmethod
    def load(cls, name: str) -> Script:
        return cls(name, _resolve(_read(f"{name}.lua")))

    def _check(self, keys: Sequence[str]) -> int:
        """The number of keys to send; raises if it is not the script's."""
        if self.numkeys is None:
            return len(keys)
        if len(keys) != self.numkeys:
            raise ValueError(f"script {self.name} takes {self.numkeys} keys, got {len(keys)}")
        return self.numkeys

    async def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        numkeys = self._check(keys)
        try:
            return await client.evalsha(self.sha, numkeys, *keys, *args)
        except NoScriptError:
            # The server lost its script cache (restart, failover, SCRIPT FLUSH): load it
            # again and retry once.
            await client.script_load(self.source)
            return await client.evalsha(self.sha, numkeys, *keys, *args)

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[Any]) -> None:
        numkeys = self._check(keys)
        # execute_command, not pipe.evalsha: redis-py's cluster pipeline blocks its evalsha
        # method, yet routes an EVALSHA command by its keys like any other
        pipe.execute_command("EVALSHA", self.sha, numkeys, *keys, *args)


class Scripts:
    """All scripts of the state layer, registered once."""

    NAMES = ("reactive-7", "reactive-n", "proactive-7", "sweep-7", "composite-3", "park-4", "finish-n",
             "lost-2", "clock-1", "lease_renew-1", "lease_release-1", "dry_copy-14",
             "dry_copy_composite-6", "intake-n", "touch-1",
             "retire-1")

    def __init__(self) -> None:
        self.by_name = {name: Script.load(name) for name in self.NAMES}
        self.reactive = self.by_name["reactive-7"]
        self.reactive_n = self.by_name["reactive-n"]
        self.proactive = self.by_name["proactive-7"]
        self.sweep = self.by_name["sweep-7"]
        self.composite = self.by_name["composite-3"]
        self.park = self.by_name["park-4"]
        self.finish = self.by_name["finish-n"]
        self.intake = self.by_name["intake-n"]
        self.touch = self.by_name["touch-1"]
        self.retire = self.by_name["retire-1"]
        self.lost = self.by_name["lost-2"]
        self.clock = self.by_name["clock-1"]
        self.lease_renew = self.by_name["lease_renew-1"]
        self.lease_release = self.by_name["lease_release-1"]
        self.dry_copy = self.by_name["dry_copy-14"]
        self.dry_copy_composite = self.by_name["dry_copy_composite-6"]

    async def load_all(self, client: Redis) -> None:
        """SCRIPT LOAD every script, so pipelined EVALSHA calls find them."""
        for script in self.by_name.values():
            await client.script_load(script.source)
