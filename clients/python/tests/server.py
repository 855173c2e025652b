"""Starts a real contextd on a free loopback port for the tests."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# Flags every test server gets; the store flag goes here once `serve` has one.
SERVE_ARGS = ["serve", "--listen", "127.0.0.1:0", "--store", "memory"]


def binary() -> str:
    """CONTEXTD_BIN, else the repository's debug build."""
    path = os.environ.get("CONTEXTD_BIN") or str(REPO / "target" / "debug" / "contextd")
    if not Path(path).is_file():
        raise RuntimeError(
            f"no contextd binary at {path}: build it (cargo build) or set CONTEXTD_BIN"
        )
    return path


class Server:
    """A contextd child process; `address` is where it listens."""

    def __init__(self, *extra_args: str) -> None:
        """``extra_args`` are appended to ``serve``'s flags (such as ``--auth keys``)."""
        self.process = subprocess.Popen(
            [binary(), *SERVE_ARGS, *extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        address = None
        for line in self.process.stdout:
            if line.startswith("contextd listening on "):
                address = line.split("contextd listening on ", 1)[1].strip()
                break
        if address is None:
            code = self.process.wait(timeout=10)
            raise RuntimeError(f"contextd exited with {code} before listening")
        self.address: str = address
        # Keep draining stdout so the child never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def add_key(config: Path, tenant: str, role: str) -> str:
    """Makes a key offline with ``contextd keys add`` in the config's ``auth.keys_file``;
    returns it."""
    out = subprocess.run(
        [binary(), "keys", "add", "--tenant", tenant, "--role", role, "--store", "memory", "--config", str(config)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()
