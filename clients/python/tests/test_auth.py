"""The wrapper against a server started with ``--auth keys``: keys made offline in a keys
file, the bearer token, and the errors a missing key or a user key's admin call get."""

from __future__ import annotations

import asyncio
from typing import Iterator

import pytest

from contextd import AsyncClient, Client, PermissionDeniedError, UnauthenticatedError
from server import Server, add_key


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    directory = tmp_path_factory.mktemp("auth")
    config = directory / "contextd.toml"
    config.write_text(f'[auth]\nkeys_file = "{directory / "keys.toml"}"\n', encoding="utf-8")
    admin = add_key(config, "acme", "admin")
    user = add_key(config, "acme", "user")
    running = Server("--auth", "keys", "--config", str(config))
    try:
        yield running, admin, user
    finally:
        running.stop()


def test_keys_are_required_and_roles_enforced(auth_server: tuple[Server, str, str]) -> None:
    server, admin, user = auth_server
    assert admin.startswith("ctxd_") and user.startswith("ctxd_")
    with Client(server.address) as anonymous:
        with pytest.raises(UnauthenticatedError) as missing:
            anonymous.list_sessions()
        assert "authorization" in missing.value.message
    with Client(server.address, token=user) as client:
        created = client.create_session("auth-py")
        assert created.session_id == "auth-py"
        assert [t.tenant_id for t in client.list_tenants()] == ["acme"]
        with pytest.raises(PermissionDeniedError):
            client.list_keys()
    with Client(server.address, token=admin) as client:
        keys = client.list_keys("acme")
        assert len(keys) == 2 and {k.tenant_id for k in keys} == {"acme"}


def test_async_client_sends_the_key(auth_server: tuple[Server, str, str]) -> None:
    server, _, user = auth_server

    async def run() -> None:
        async with AsyncClient(server.address) as anonymous:
            with pytest.raises(UnauthenticatedError):
                await anonymous.list_sessions()
        async with AsyncClient(server.address, token=user) as client:
            await client.get_session("auth-py")
            with pytest.raises(PermissionDeniedError):
                await client.list_keys()

    asyncio.run(run())


def test_admin_calls_without_auth() -> None:
    # A server of its own: the shared one's tenant list is the admin scenario's to check.
    running = Server()
    try:
        with Client(running.address) as client:
            _admin_round_trip(client)
    finally:
        running.stop()


def _admin_round_trip(client: Client) -> None:
    created = client.create_key("py-admin-t", role="admin", label="py", ttl=3600)
    assert created.secret.startswith("ctxd_")
    assert created.key.tenant_id == "py-admin-t" and created.key.label == "py"
    assert created.key.HasField("expire_time")
    assert [k.key_id for k in client.list_keys("py-admin-t")] == [created.key.key_id]
    assert "py-admin-t" in [t.tenant_id for t in client.list_tenants()]
    client.create_session("py-export")
    client.interact("py-export", "hello")
    records = list(client.export_tenant("default"))
    mine = [r for r in records if r.session_id == "py-export"]
    assert [r.WhichOneof("record") for r in mine] == ["session", "message", "message"]
    assert client.revoke_key(created.key.key_id).HasField("revoke_time")
    assert client.delete_tenant("py-admin-t").deleted_keys == 1
    with pytest.raises(ValueError):
        client.create_key("py-admin-t", role="root")  # type: ignore[arg-type]
    client.delete_session("py-export")
