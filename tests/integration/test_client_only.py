"""The client alone: `pip install` of this repository with no extras, in a
fresh virtual environment, brings one import name and nothing heavy, and its
client talks to a running stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.conftest import Stack
from tests.support.procs import REPO

pytestmark = pytest.mark.integration

# What a web app that installs the client must not get.
HEAVY = ("torch", "celery", "sklearn", "flower", "matplotlib", "kombu", "fastapi", "pydantic")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("client-only")
    # A copy of the checkout (links kept), so that the build leaves nothing in it.
    source = tmp / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "models", "build", "*.egg-info", "__pycache__", ".*_cache"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return python


def _run(python: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    # Isolated (-I: no PYTHONPATH, no user site, no current folder) and from a
    # folder outside the checkout: nothing on sys.path but the venv.
    return subprocess.run([str(python), "-I", "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, cwd=python.parent, timeout=120, check=False)


def test_the_install_adds_one_import_name_and_nothing_heavy(client_venv: Path) -> None:
    probe = _run(client_venv, """
        import importlib.util, json, sys
        from importlib.metadata import distribution
        files = distribution("turnout").files or []
        tops = sorted({f.parts[0] for f in files if f.suffix == ".py" or f.name == "__init__.py"
                       if not f.parts[0].endswith(".dist-info") and f.parts[0] != ".."})
        print(json.dumps({
            "tops": tops,
            "found": {m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]},
        }))
    """, "router", "workers", "ml", "benchmarks", *HEAVY)
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    assert seen["tops"] == ["turnout"]
    assert not any(seen["found"].values()), seen["found"]
    # The parts are in the package, under their one name.
    mapped = _run(client_venv, """
        import importlib.util
        for name in ("turnout.router", "turnout.workers.gpu", "turnout.ml.adapters",
                     "turnout.benchmarks.chaos", "turnout.core.lua"):
            assert importlib.util.find_spec(name) is not None, name
    """)
    assert mapped.returncode == 0, mapped.stderr
    # The command says what to install rather than failing on an import.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = subprocess.run([str(client_venv.parent / "turnout"), "--help"], capture_output=True,
                             text=True, timeout=60, check=False, env=env, cwd=client_venv.parent)
    assert command.returncode == 2
    assert "pip install 'turnout[server]'" in command.stderr


def test_the_client_alone_serves_a_prediction(client_venv: Path, stack: Stack) -> None:
    done = _run(client_venv, """
        import json, sys
        from turnout.client import Client, InvalidInput
        with Client(sys.argv[1]) as turnout:
            body = turnout.predict("iris", [[5.1, 3.5, 1.4, 0.2]], wait=30)
            try:
                turnout.predict("iris", [[1.0]], wait=5)
            except InvalidInput as exc:
                error = exc.detail
            print(json.dumps({"body": body, "error": error, "torch": "torch" in sys.modules}))
    """, stack.url)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["body"]["status"] == "SUCCESS" and out["body"]["predictions"] == ["setosa"]
    assert "expected 4 numbers" in out["error"]
    assert out["torch"] is False
