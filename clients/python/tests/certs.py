"""Test certificates made with the openssl command: a CA, a server certificate for localhost
and 127.0.0.1, and a client certificate, as PEM files in a directory."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(directory: Path, name: str, subject: str, extensions: str, ca: str = "ca") -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=directory,
    )
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        cwd=directory,
    )


def make_ca(directory: Path, name: str = "ca") -> None:
    """A self-signed CA as <name>.pem and <name>.key."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-subj", f"/CN=contextd test {name}", cwd=directory,
    )


def make_pki(directory: Path) -> Path:
    """ca.pem, server.pem/.key (localhost, 127.0.0.1), client.pem/.key (CN alice), and a
    second CA other.pem that issued neither."""
    make_ca(directory)
    make_ca(directory, "other")
    _issue(
        directory, "server", "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    _issue(
        directory, "client", "/CN=alice",
        "subjectAltName=URI:spiffe://contextd.test/alice\nextendedKeyUsage=clientAuth\n",
    )
    return directory
