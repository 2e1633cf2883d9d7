"""A certificate authority made at run time, and a server certificate it
signs for an IP address (openssl's command line: no key ever leaves the
run's folder, and none is committed)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str = "turnout-rehearsal") -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    ca, key = folder / f"{name}-ca.pem", folder / f"{name}-ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name} CA", "-keyout", key.name, "-out", ca.name, cwd=folder)
    key.chmod(0o600)
    return ca, key


def server_certificates(folder: Path, ip: str, name: str = "turnout-rehearsal") -> Certificates:
    """A CA and a certificate it signs for ``ip`` (its subjectAltName)."""
    ca, ca_key = make_ca(folder, name)
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    ext = folder / "server.ext"
    ext.write_text(f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={ip}", "-keyout", key.name,
             "-out", csr.name, cwd=folder)
    _openssl("x509", "-req", "-in", csr.name, "-CA", ca.name, "-CAkey", ca_key.name,
             "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", cert.name, cwd=folder)
    key.chmod(0o600)
    return Certificates(ca=ca, cert=cert, key=key)
