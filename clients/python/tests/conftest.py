"""One real contextd per test session, on a free loopback port."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server import Server  # noqa: E402


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    running = Server()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def target(server: Server) -> str:
    return server.address
