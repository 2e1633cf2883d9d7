"""The API's docs page works on a machine with no network: Swagger UI and
ReDoc come from the package, and a real browser with every name but the
loopback unresolvable shows the routes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_nothing_from_elsewhere(stack: Stack, page: str) -> None:
    html = stack.http.get(page)
    assert html.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert sources, html.text[:500]
    for source in sources:
        assert source.startswith("/"), f"{page} loads {source} from elsewhere"
        assert stack.http.get(source).status_code == 200, source


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get "
                    "install chromium); the browser check of /docs is skipped")
def test_the_docs_page_lists_the_routes_in_a_browser_with_no_network(
        stack: Stack, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             # No name resolves and no proxy helps: only the API itself is reachable.
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--no-proxy-server", "--virtual-time-budget=10000", "--window-size=1400,1000"]
    dom = subprocess.run([*flags, "--dump-dom", stack.url + "/docs"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert "/v1/models/{name}/predict" in dom.stdout, dom.stderr[-2000:]
    assert "/v1/workers" in dom.stdout and "opblock" in dom.stdout
    shot = tmp_path / "docs.png"
    subprocess.run([*flags, f"--screenshot={shot}", stack.url + "/docs"], capture_output=True,
                   timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 10_000
