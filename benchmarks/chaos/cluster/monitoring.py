"""A real Prometheus for the rehearsal: it scrapes every API process and
evaluates the shipped alert rules; the shipped dashboard's queries are asked
of it as Grafana would."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

import yaml

REPO = Path(__file__).resolve().parents[3]
MONITORING = REPO / "configs" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS = "/usr/bin/prometheus"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the shipped dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel.get("targets", []) if target.get("expr")]


def alert_rules() -> list[dict[str, Any]]:
    """Every alert rule of the shipped rules file."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def missing() -> str | None:
    if not Path(PROMETHEUS).is_file() and not shutil.which("prometheus"):
        return "Prometheus is not installed: apt-get install prometheus"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """One Prometheus server on loopback of the host it is started on,
    scraping ``targets`` (host:port) every second and evaluating the shipped
    alert rules every second."""

    def __init__(self, folder: Path, targets: list[str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "turnout-api",
                                "static_configs": [{"targets": targets}]}],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    def start(self, timeout_s: float = 30) -> None:
        binary = PROMETHEUS if Path(PROMETHEUS).is_file() else shutil.which("prometheus")
        assert binary is not None
        self.log = (self.folder / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.proc.returncode}); see {self.folder}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready in {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as exc:  # a bad query: 400 with the error in JSON
            return dict(json.loads(exc.read()))

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query: ``{"status", "data"}`` or ``{"status": "error", "error"}``."""
        return self._get("/api/v1/query", query=expr)

    def targets_up(self) -> dict[str, str]:
        data = self._get("/api/v1/targets")["data"]["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in data}

    def rules(self) -> list[dict[str, Any]]:
        groups = self._get("/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """The active (pending or firing) alerts of rule ``name``."""
        return [a for a in self._get("/api/v1/alerts")["data"]["alerts"]
                if a["labels"].get("alertname") == name]
