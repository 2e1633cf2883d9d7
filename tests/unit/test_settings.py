from __future__ import annotations

from pathlib import Path

import pytest

from turnout.core.errors import ConfigError
from turnout.core.settings import RedisSettings, Settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", RedisSettings("localhost", 6379, 0)),
        ("redis://:pw@10.0.0.5:6380/2", RedisSettings("10.0.0.5", 6380, 2, password="pw")),
        ("rediss://user:p%40ss@cache.example:6390/1", RedisSettings("cache.example", 6390, 1, "user", "p@ss", tls=True)),
    ],
)
def test_redis_urls_parse_into_typed_settings(url: str, expected: RedisSettings) -> None:
    assert RedisSettings.from_url(url) == expected


def test_url_round_trips_a_password_with_reserved_characters() -> None:
    settings = RedisSettings("127.0.0.1", 7000, 3, password="a/b:c@d%e")
    assert RedisSettings.from_url(settings.url) == settings
    assert settings.redacted == "redis://:***@127.0.0.1:7000/3"
    assert "a/b" not in settings.redacted


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost:6379", "expected a redis:// or rediss:// URL, got scheme 'http'"),
        ("localhost:6379", "expected a redis:// or rediss:// URL"),
        ("redis://", "names no host"),
        ("redis://host:6379/zero", "invalid literal"),
    ],
)
def test_bad_broker_urls_are_refused_naming_the_variable(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        RedisSettings.from_url(url)
    assert "TURNOUT_BROKER_URL" in str(err.value) and message in str(err.value)


def test_settings_refuse_a_bad_broker_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_BROKER_URL", "amqp://guest@localhost//")
    with pytest.raises(ConfigError, match="TURNOUT_BROKER_URL"):
        Settings()


def test_broker_comes_from_the_env_then_from_the_running_stack(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, broker_url=None)
    with pytest.raises(ConfigError, match="no broker: set TURNOUT_BROKER_URL"):
        settings.redis()
    (tmp_path / "broker.url").write_text("redis://:secret@127.0.0.1:7001/0\n")
    assert settings.redis() == RedisSettings("127.0.0.1", 7001, 0, password="secret")
    explicit = Settings(home=tmp_path, broker_url="redis://10.1.1.1:6379/4")
    assert explicit.redis().host == "10.1.1.1"


def test_a_rediss_url_carries_its_ca_and_client_certificate(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("x")
    url = (f"rediss://:pw@cache:6380/0?ssl_ca_certs={tmp_path}/ca.pem"
           f"&ssl_certfile={tmp_path}/client.pem&ssl_keyfile={tmp_path}/client.key")
    parsed = RedisSettings.from_url(url)
    assert parsed.ca_file == f"{tmp_path}/ca.pem" and parsed.key_file == f"{tmp_path}/client.key"
    # redis-py reads the options from the query; kombu is given them apart.
    assert RedisSettings.from_url(parsed.url) == parsed
    assert parsed.tls_options()["ssl_cert_reqs"] == "required"
    assert "?" not in parsed.bare_url and "?" not in parsed.redacted
    assert "pw" not in parsed.redacted


@pytest.mark.parametrize(
    ("query", "scheme", "message"),
    [
        ("ssl_ca_certs=/no/such/ca.pem", "rediss", "ssl_ca_certs: no such file /no/such/ca.pem"),
        ("ssl_cert_reqs=none", "rediss", "ssl_cert_reqs must be 'required'"),
        ("ssl_ca_certs=/etc/hostname", "redis", "TLS options need a rediss:// URL"),
        ("timeout=3", "rediss", "unknown option(s) timeout"),
    ],
)
def test_tls_options_that_would_not_verify_are_refused(query: str, scheme: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        RedisSettings.from_url(f"{scheme}://cache:6380/0?{query}")
    assert message in str(err.value)


def test_a_sentinel_url_names_every_sentinel_and_the_primary() -> None:
    url = "sentinel://:p%40w@10.0.0.2:26379;sentinel://10.0.0.3:26380;sentinel://10.0.0.4/2?master_name=turnout"
    parsed = RedisSettings.from_url(url)
    assert parsed.sentinels == (("10.0.0.2", 26379), ("10.0.0.3", 26380), ("10.0.0.4", 26379))
    assert (parsed.master_name, parsed.db, parsed.password) == ("turnout", 2, "p@w")
    assert RedisSettings.from_url(parsed.url) == parsed
    assert "p@w" not in parsed.redacted and "p%40w" not in parsed.redacted
    # kombu's transport gets one Sentinel (it would take the rest for failover
    # URLs); Celery's result backend all of them, each with the password.
    assert parsed.kombu_url(alternates=False) == "sentinel://:p%40w@10.0.0.2:26379/2"
    assert parsed.kombu_url().count("sentinel://:p%40w@") == 3


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sentinel://10.0.0.2:26379", "needs ?master_name="),
        ("sentinel://10.0.0.2:26379;redis://10.0.0.3?master_name=x", "expected sentinel://host:port"),
        ("sentinel://10.0.0.2:26379?master_name=x&ssl_ca_certs=/a", "unknown option(s) ssl_ca_certs"),
    ],
)
def test_bad_sentinel_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        RedisSettings.from_url(url)
    assert message in str(err.value)
