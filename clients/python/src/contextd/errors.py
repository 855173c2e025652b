"""The one exception type of the client: a failed call, with its gRPC status code."""

from __future__ import annotations

import grpc

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode for a numeric code (UNKNOWN for numbers gRPC does not define)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


class ContextdError(Exception):
    """A call to contextd failed. ``code`` is the grpc.StatusCode, ``message`` says what to fix."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ContextdError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")
