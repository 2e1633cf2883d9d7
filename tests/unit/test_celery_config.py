from __future__ import annotations

import yaml

from turnout.core.celery_app import celery_config, make_celery, visibility_timeout_s
from turnout.core.routes import parse_routes
from turnout.core.settings import RedisSettings, Settings

TABLE = parse_routes(
    yaml.safe_load(
        """
models:
  a: {framework: sklearn, version: 1, queue: cpu, input: {width: 4}, time_limit_s: 10}
  b: {framework: torch, version: 1, queue: gpu, input: {width: 4}, time_limit_s: 300}
"""
    )
)
REDIS = RedisSettings("127.0.0.1", 7000, 0, password="pw")


def test_messages_are_json_only_both_ways() -> None:
    conf = celery_config(REDIS, Settings(), TABLE)
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["accept_content"] == conf["result_accept_content"] == ["json"]


def test_jobs_survive_a_dying_worker() -> None:
    conf = celery_config(REDIS, Settings(), TABLE)
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True


def test_visibility_timeout_outlasts_the_longest_job_and_wait_everywhere() -> None:
    settings = Settings(max_queue_wait_s=600)
    conf = celery_config(REDIS, settings, TABLE)
    vt = visibility_timeout_s(settings, TABLE)
    assert vt >= 300 + 600
    assert conf["broker_transport_options"]["visibility_timeout"] == vt
    assert conf["result_backend_transport_options"]["visibility_timeout"] == vt
    assert conf["visibility_timeout"] == vt


def test_results_expire_and_tls_urls_verify_certificates() -> None:
    conf = celery_config(RedisSettings("cache", 6380, tls=True), Settings(result_ttl_s=120), TABLE)
    assert conf["result_expires"] == 120
    assert conf["broker_use_ssl"]["ssl_cert_reqs"] == conf["redis_backend_use_ssl"]["ssl_cert_reqs"]
    assert conf["broker_url"].startswith("rediss://")


def test_building_the_app_connects_to_nothing() -> None:
    # Port 1 has no Redis: building must not try to reach it.
    app = make_celery(Settings(), TABLE, RedisSettings("127.0.0.1", 1))
    assert app.conf.broker_url == "redis://127.0.0.1:1/0"


def test_a_sentinel_broker_gets_the_sentinel_transport_and_backend() -> None:
    where = RedisSettings.from_url("sentinel://:pw@10.0.0.2:26379;sentinel://10.0.0.3:26379/0"
                                   "?master_name=turnout")
    conf = celery_config(where, Settings(), TABLE)
    assert conf["broker_transport"].endswith(":SentinelTransport")
    assert conf["broker_url"] == "sentinel://:pw@10.0.0.2:26379/0"  # one: no kombu failover
    assert conf["result_backend"].startswith("turnout.core.backend:FencedSentinelBackend+sentinel://")
    assert conf["broker_transport_options"]["master_name"] == "turnout"
    assert conf["result_backend_transport_options"]["master_name"] == "turnout"
    assert RedisSettings.from_url(conf["broker_transport_options"]["turnout_broker"]) == where
