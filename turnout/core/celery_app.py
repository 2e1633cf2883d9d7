"""Builds the Celery app. No side effects: nothing connects until it is used.

The router and the workers build the same app from the same settings. The
router sends tasks by name (``TASK_PREDICT``) and never imports worker code.
"""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery

from turnout.core.routes import RouteTable
from turnout.core.settings import RedisSettings, Settings

TASK_PREDICT = "turnout.predict"
TRANSPORT = "turnout.core.transport:Transport"
BACKEND = "turnout.core.backend:FencedRedisBackend"
SENTINEL_TRANSPORT = "turnout.core.transport:SentinelTransport"
SENTINEL_BACKEND = "turnout.core.backend:FencedSentinelBackend"


def visibility_timeout_s(settings: Settings, table: RouteTable) -> int:
    """kombu's visibility timeout: after it, an unacknowledged message *with no
    owner* is given to another worker. Owned deliveries come back only when
    their worker is declared dead (turnout.core.delivery), so this is a last
    backstop; it still outlasts the longest time limit plus queue wait."""
    if settings.visibility_timeout_s is not None:
        return settings.visibility_timeout_s
    return int(table.max_time_limit_s + settings.max_queue_wait_s)


def celery_config(redis: RedisSettings, settings: Settings, table: RouteTable) -> dict[str, Any]:
    vt = visibility_timeout_s(settings, table)
    conf: dict[str, Any] = {
        "broker_url": redis.kombu_url(alternates=False),
        # kombu's Redis transport with owned deliveries, and Celery's Redis
        # backend with fenced results (turnout/delivery.py says why).
        "broker_transport": SENTINEL_TRANSPORT if redis.sentinels else TRANSPORT,
        "result_backend": f"{SENTINEL_BACKEND if redis.sentinels else BACKEND}+"
                          f"{redis.kombu_url()}",
        # JSON only, both ways: a worker never unpickles what the broker hands it.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        # Acknowledge after the task ran, and give the message back when the
        # process running it dies, so that no accepted job is lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        # The predict task writes STARTED and its result itself, each in a
        # pipeline with its own bookkeeping (workers/runtime.py): Celery's
        # backend would read the key back before every write, two round trips
        # more per task. Failures are still stored by Celery.
        "task_track_started": False,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": True,
        "result_expires": settings.result_ttl_s,
        "result_extended": False,
        # kombu reads the visibility timeout from the broker's transport options;
        # the Redis result backend reads its own; Celery's docs ask for the
        # top-level one too. They are the same number everywhere.
        "broker_transport_options": {
            "visibility_timeout": vt,
            "socket_timeout": 30,
            "socket_connect_timeout": 10,
            "socket_keepalive": True,
            "health_check_interval": 25,
            # How often a worker looks for messages whose worker died without
            # acknowledging them (and whose visibility timeout has passed).
            "unacked_restore_interval": max(1, min(60, vt // 20)),
            "unacked_restore_throttle": 1,
        },
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "broker_connection_retry_on_startup": True,
        "redis_socket_keepalive": True,
        "redis_socket_connect_timeout": 10,
        # Nothing should land on Celery's default 'celery' queue, which no
        # Turnout worker consumes.
        "task_default_queue": "cpu",
        "task_create_missing_queues": True,
        # Task events, for Flower and celery-exporter (TURNOUT_EVENTS, or
        # `turnout up --flower`); Flower also turns them on in running workers.
        "worker_send_task_events": settings.events,
        # Read by the result backend: record each result in the ledger.
        "turnout_ledger": settings.ledger,
        "task_send_sent_event": settings.events,
        # A child that loads a deep model needs longer than Celery's default 4 s
        # to say it is alive.
        "worker_proc_alive_timeout": 120.0,
        "worker_hijack_root_logger": True,
        "enable_utc": True,
        "timezone": "UTC",
    }
    # Where the owning QoS opens its own client (turnout.core.transport): the
    # whole URL, Sentinels and TLS options included.
    conf["broker_transport_options"]["turnout_broker"] = redis.url
    if redis.sentinels:
        # kombu's Sentinel transport and Celery's Sentinel backend read the
        # primary's name from their transport options.
        for options in ("broker_transport_options", "result_backend_transport_options"):
            conf[options]["master_name"] = redis.master_name
    if redis.tls:
        # kombu and Celery's backend take the TLS options apart from the URL.
        tls: dict[str, Any] = {**redis.tls_options(), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        conf["broker_use_ssl"] = tls
        conf["redis_backend_use_ssl"] = tls
    return conf


def make_celery(settings: Settings, table: RouteTable, redis: RedisSettings | None = None) -> Celery:
    app = Celery("turnout", set_as_current=False)
    app.conf.update(celery_config(redis or settings.redis(), settings, table))
    return app


def __getattr__(name: str) -> Celery:
    """``turnout.core.celery_app.app``: the app built from the settings on first
    use, so that Celery's own tools work as its docs show
    (``celery -A turnout.core.celery_app inspect active``, ``… events``, ``… flower``)
    while importing this module still connects to nothing."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    global _app
    if _app is None:
        from turnout.core.routes import compose
        from turnout.core.settings import load_settings

        settings = load_settings()
        _app = make_celery(settings, compose(settings.routes_file, settings.models_dir)[1])
    return _app


_app: Celery | None = None
