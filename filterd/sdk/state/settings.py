"""``StateSettings``: where a plugin keeps its policy state, as a ``Config`` field.

[chain.config.state]
backend = "sqlite"                          # or "redis"
path = "/var/lib/filterd/greylist.sqlite"   # sqlite: the database file
url = "redis://127.0.0.1:6379/0"            # redis: redis://, rediss:// or unix:// URL
prefix = "filterd:greylist:"                # redis: key prefix (several plugins, one server)
timeout = "2s"                              # per call; past it the store counts as down
concurrency = 8                             # calls at once (redis: connections)
on_store_failure = "dunno"                  # or "tempfail" (451 4.3.0)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from filterd.config.types import Duration
from filterd.maillog import MailLog
from filterd.model.findings import Finding
from filterd.model.reply import Reply
from filterd.model.verdict import Continue, TempFail, Verdict
from filterd.sdk.plugin import PluginConfig
from filterd.sdk.state.base import StoreFailure
from filterd.sdk.state.redis_connection import parse_redis_url

DEFAULT_SQLITE_PATH = Path("/var/lib/filterd/state.sqlite")


class StateSettings(PluginConfig):
    backend: Literal["sqlite", "redis"] = Field(
        default="sqlite",
        description="sqlite: an embedded database file (one host); redis: a Redis server "
        "several filterd hosts share.",
    )
    path: Path = Field(
        default=DEFAULT_SQLITE_PATH,
        description="sqlite: the database file (its directory must be writable by filterd's "
        "user; WAL mode adds -wal and -shm files next to it).",
    )
    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description='redis: "redis://[:password@]host:port/db", "rediss://..." (TLS) or '
        '"unix:///run/redis/redis.sock?db=0".',
    )
    prefix: str = Field(
        default="filterd:",
        description="redis: prefix of every key (keeps plugins and hosts' other data apart).",
    )
    timeout: Duration = Field(
        default=2.0,
        gt=0,
        description="Longest wait for one store call; past it the store counts as down.",
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Store calls running at once (sqlite: worker threads; redis: connections).",
    )
    on_store_failure: Literal["dunno", "tempfail"] = Field(
        default="dunno",
        description="A store that is down or slow: dunno lets the mail through unchecked "
        "(fail open), tempfail answers 451 4.3.0 so the client retries. Logged either way.",
    )

    @model_validator(mode="after")
    def _url_scheme(self) -> StateSettings:
        if self.backend == "redis":
            parse_redis_url(self.url)  # ValueError: what is wrong with it
        return self

    def failure_verdict(self, failure: StoreFailure, log: MailLog, finding: str) -> Verdict:
        """What a plugin answers when its store failed: logged as a warning, then ``dunno``
        (Continue with a ``finding`` of the failure) or ``tempfail`` (451 4.3.0)."""
        log.warning(f"{failure}; on_store_failure = {self.on_store_failure}")
        found = (Finding(finding, "store-failure"),)
        if self.on_store_failure == "tempfail":
            return TempFail(Reply(451, "4.3.0", "Temporary policy state failure"), found)
        return Continue(findings=found)
