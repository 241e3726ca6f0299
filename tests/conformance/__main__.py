"""`python -m tests.conformance [--stack NAME] [--echo NAME] [-v] [engineio socketio autobahn]`.

Runs each suite named (all three by default) and prints its own summary: mocha's counts and
failing titles, Autobahn's case counts by behaviour and the cases not accepted. Exits 1 if
any of them did not pass everything, 2 if one could not be run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tests.conformance.apps import STACKS
from tests.conformance.echo import ECHO_ENDPOINTS
from tests.conformance.runner import HarnessError, run_autobahn, run_protocol_suite

CHECKS = ("engineio", "socketio", "autobahn")


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance")
    # Checked below: argparse (3.11) tests an empty `nargs="*"` list against `choices` too.
    parser.add_argument("checks", nargs="*", metavar="{engineio,socketio,autobahn}")
    parser.add_argument("--stack", choices=sorted(STACKS), default="gateway")
    parser.add_argument("--echo", choices=sorted(ECHO_ENDPOINTS), default="engineio")
    parser.add_argument("-v", "--verbose", action="store_true", help="print mocha's output")
    args = parser.parse_args(argv)
    if unknown := set(args.checks) - set(CHECKS):
        parser.error(f"unknown check {', '.join(sorted(unknown))}")
    passed = True
    try:
        for check in args.checks or CHECKS:
            if check == "autobahn":
                autobahn = await run_autobahn(args.echo)
                print(autobahn.summary(), flush=True)
                passed &= autobahn.passed
                continue
            result = await run_protocol_suite(check, STACKS[args.stack])
            if args.verbose:
                print(result.output.rstrip())
            print(result.summary(), flush=True)
            passed &= result.passed
    except HarnessError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
