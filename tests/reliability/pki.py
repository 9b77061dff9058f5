"""A throwaway certificate authority for the TLS tests, made with the openssl command."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from another CA
    stranger_key: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(directory: Path, name: str, ca: str, subject: str, extension: str) -> None:
    _run("req", *KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
         cwd=directory)
    (directory / f"{name}.ext").write_text(extension + "\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
         "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
         cwd=directory)


def make_pki(directory: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    for ca in ("ca", "other-ca"):
        _run("req", "-x509", *KEY, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
             "-subj", f"/CN={ca}", cwd=directory)
    _issue(directory, "server", "ca", "/CN=localhost",
           "subjectAltName=IP:127.0.0.1,DNS:localhost")
    _issue(directory, "client", "ca", "/CN=admin", "extendedKeyUsage=clientAuth")
    _issue(directory, "stranger", "other-ca", "/CN=stranger", "extendedKeyUsage=clientAuth")
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        stranger_cert=directory / "stranger.pem",
        stranger_key=directory / "stranger.key",
    )
