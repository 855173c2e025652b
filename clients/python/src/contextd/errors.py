"""The client's exceptions: ``ContextdError`` for every failed call, and one subclass per gRPC
status code (``NotFoundError``, ``InvalidArgumentError``, …), so that callers can catch the
failures they expect by type."""

from __future__ import annotations

import grpc

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode for a numeric code (UNKNOWN for numbers gRPC does not define)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


class ContextdError(Exception):
    """A call to contextd failed. ``code`` is the grpc.StatusCode, ``message`` says what to fix.

    Raised as the subclass for its code; ``ContextdError(code, message)`` itself builds the
    right subclass too."""

    def __new__(cls, code: grpc.StatusCode, message: str) -> ContextdError:
        if cls is ContextdError:
            cls = _BY_CODE.get(code, ContextdError)
        return super().__new__(cls)

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[grpc.StatusCode, str]]:
        return (ContextdError, (self.code, self.message))

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ContextdError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return ContextdError(code or grpc.StatusCode.UNKNOWN, details or "")


class CancelledError(ContextdError):
    """CANCELLED: the call was cancelled (usually by the caller)."""


class UnknownError(ContextdError):
    """UNKNOWN."""


class InvalidArgumentError(ContextdError):
    """INVALID_ARGUMENT: the request is malformed; the message says which field and why."""


class DeadlineExceededError(ContextdError):
    """DEADLINE_EXCEEDED: the call's deadline passed (a turn then stores nothing)."""


class NotFoundError(ContextdError):
    """NOT_FOUND: the session (or tool) does not exist."""


class AlreadyExistsError(ContextdError):
    """ALREADY_EXISTS: the session id is taken."""


class PermissionDeniedError(ContextdError):
    """PERMISSION_DENIED."""


class ResourceExhaustedError(ContextdError):
    """RESOURCE_EXHAUSTED: a limit was reached (rate, queue, size)."""


class FailedPreconditionError(ContextdError):
    """FAILED_PRECONDITION: the session is not in a state for this (for example it awaits tool
    results)."""


class AbortedError(ContextdError):
    """ABORTED: a conflict; read again and retry."""


class OutOfRangeError(ContextdError):
    """OUT_OF_RANGE: a value (for example a message size) is out of range."""


class UnimplementedError(ContextdError):
    """UNIMPLEMENTED: the server does not offer this call."""


class InternalError(ContextdError):
    """INTERNAL: the server failed."""


class UnavailableError(ContextdError):
    """UNAVAILABLE: the server cannot be reached or is shutting down; safe calls may be
    retried."""


class DataLossError(ContextdError):
    """DATA_LOSS."""


class UnauthenticatedError(ContextdError):
    """UNAUTHENTICATED: missing or wrong credentials."""


_BY_CODE: dict[grpc.StatusCode, type[ContextdError]] = {
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.UNKNOWN: UnknownError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}

ERRORS = tuple(sorted({c.__name__ for c in _BY_CODE.values()}))
