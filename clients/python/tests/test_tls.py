"""The client's TLS options against a real contextd serving TLS (and mTLS), with certificates
made at test time by the openssl command."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from certs import make_pki  # noqa: E402
from server import Server  # noqa: E402

import contextd  # noqa: E402
from contextd import AsyncClient, Client, ContextdError  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _serve(pki: Path, mtls: bool) -> Iterator[str]:
    args = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    if mtls:
        args += ["--tls-client-ca", str(pki / "ca.pem")]
    server = Server(*args)
    try:
        yield "localhost:" + server.address.rsplit(":", 1)[1]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_target(pki: Path) -> Iterator[str]:
    yield from _serve(pki, mtls=False)


@pytest.fixture(scope="module")
def mtls_target(pki: Path) -> Iterator[str]:
    yield from _serve(pki, mtls=True)


def test_tls_with_the_ca_as_a_path_and_as_bytes(pki: Path, tls_target: str) -> None:
    with Client(tls_target, ca_cert=str(pki / "ca.pem"), timeout=20) as client:
        assert client.interact("py-tls", "hello").response
    with contextd.connect(tls_target, ca_cert=(pki / "ca.pem").read_bytes(), timeout=20) as client:
        assert client.list_models().models


def test_a_client_without_the_ca_is_refused(pki: Path, tls_target: str) -> None:
    with Client(tls_target, ca_cert=pki / "other.pem", timeout=5) as client:
        with pytest.raises(ContextdError) as error:
            client.list_models()
    assert error.value.code.name == "UNAVAILABLE"
    # Plaintext to a TLS port is refused too.
    with Client(tls_target, timeout=5) as client:
        with pytest.raises(ContextdError):
            client.list_models()


def test_mtls_needs_the_client_certificate(pki: Path, mtls_target: str) -> None:
    with Client(
        mtls_target,
        ca_cert=pki / "ca.pem",
        client_cert=pki / "client.pem",
        client_key=pki / "client.key",
        timeout=20,
    ) as client:
        assert client.interact("py-mtls", "hello").response
    with Client(mtls_target, ca_cert=pki / "ca.pem", timeout=5) as client:
        with pytest.raises(ContextdError) as error:
            client.list_models()
    assert error.value.code.name == "UNAVAILABLE"


def test_the_async_client_takes_the_same_options(pki: Path, mtls_target: str) -> None:
    import asyncio

    async def run() -> str:
        async with AsyncClient(
            mtls_target,
            ca_cert=(pki / "ca.pem").read_bytes(),
            client_cert=(pki / "client.pem").read_bytes(),
            client_key=(pki / "client.key").read_bytes(),
            timeout=20,
        ) as client:
            return (await client.interact("py-mtls-async", "hello")).response

    assert asyncio.run(run())


def test_half_an_identity_is_refused_before_connecting(pki: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        Client("localhost:1", ca_cert=pki / "ca.pem", client_cert=pki / "client.pem")
