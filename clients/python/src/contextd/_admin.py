"""Request messages of the AdminService calls, shared by Client and AsyncClient.

The admin calls return the generated messages (``contextd.v1.admin_pb2``) as they are, like
``list_models``: keys, tenant usage and export records are records, not handles."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from google.protobuf import duration_pb2

from contextd.v1 import admin_pb2

Role = Literal["user", "admin"]
"""What a key lets its holder do: ``"user"`` (the tenant's sessions) or ``"admin"`` (also
keys and tenants)."""

_ROLES = {"user": admin_pb2.KEY_ROLE_USER, "admin": admin_pb2.KEY_ROLE_ADMIN}


def create_key(
    tenant_id: str, role: Role, label: str, ttl: timedelta | float | None
) -> admin_pb2.CreateKeyRequest:
    """``ttl`` is a timedelta or seconds; None: the key works until revoked."""
    if role not in _ROLES:
        raise ValueError(f"role must be 'user' or 'admin', not {role!r}")
    request = admin_pb2.CreateKeyRequest(tenant_id=tenant_id, role=_ROLES[role], label=label)
    if ttl is not None:
        seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
        duration = duration_pb2.Duration()
        duration.FromTimedelta(timedelta(seconds=seconds))
        request.ttl.CopyFrom(duration)
    return request


def list_keys(tenant_id: str | None) -> admin_pb2.ListKeysRequest:
    return admin_pb2.ListKeysRequest(tenant_id=tenant_id or "")


def revoke_key(key_id: str) -> admin_pb2.RevokeKeyRequest:
    return admin_pb2.RevokeKeyRequest(key_id=key_id)


def export_tenant(tenant_id: str) -> admin_pb2.ExportTenantRequest:
    return admin_pb2.ExportTenantRequest(tenant_id=tenant_id)


def delete_tenant(tenant_id: str) -> admin_pb2.DeleteTenantRequest:
    return admin_pb2.DeleteTenantRequest(tenant_id=tenant_id)
