"""Run every example, or the ones named on the command line."""

from __future__ import annotations

import argparse

import anyio

from . import EXAMPLES, load


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(EXAMPLES))
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    names = args.names or list(EXAMPLES)
    for index, name in enumerate(names, 1):
        main = load(name)
        print(f"\n=== [{index}/{len(names)}] {name} ===")
        anyio.run(main, backend=args.backend)
    print(f"\n{len(names)} example(s) ran.")


cli()
