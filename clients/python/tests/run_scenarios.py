"""Runs scenario files from the command line: python tests/run_scenarios.py [FILE...]."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from scenarios import Runner, ScenarioFailure, load_scenarios  # noqa: E402
from server import Server  # noqa: E402


def main() -> int:
    wanted = {Path(a).stem for a in sys.argv[1:]}
    server = Server()
    failed = 0
    try:
        with grpc.insecure_channel(server.address) as channel:
            runner = Runner(channel)
            for scenario in load_scenarios():
                if wanted and scenario.path.stem not in wanted:
                    continue
                try:
                    runner.run(scenario)
                    print(f"ok   {scenario.name}")
                except ScenarioFailure as failure:
                    failed += 1
                    print(f"FAIL {failure}")
    finally:
        server.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
