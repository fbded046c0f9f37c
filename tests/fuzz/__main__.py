"""The HTTP/1.1 differential fuzz run (see docs/explanation/http11-core.md).

    python -m tests.fuzz --seed 1 --cases 100000            # every split offset
    python -m tests.fuzz --seed 1 --cases 5000 --splits 8   # interesting + 8 random offsets

Besides two-read splits, each case is also split into three reads at --triples random
pairs of offsets.

Exits 1 and prints each finding (with the bytes that produce it) when any check fails.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from tests.fuzz.check import check, choose_cuts, choose_triples
from tests.fuzz.corpus import REPRODUCERS, generate
from tests.fuzz.driver import Driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument(
        "--splits",
        type=int,
        default=None,
        help="random split offsets per case besides those next to CR/LF (default: every offset)",
    )
    parser.add_argument(
        "--triples", type=int, default=8, help="random splits into three reads per case"
    )
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--max-findings", type=int, default=20)
    args = parser.parse_args(argv)
    driver = Driver(args.loop)
    rng = random.Random(args.seed ^ 0x5EED)
    findings = []
    start = time.monotonic()
    runs = 0
    for index, data in enumerate(generate(args.seed, args.cases), 1):
        cuts = choose_cuts(data, args.splits, rng)
        # The reproducers get more three-read splits (one needs a body cut in two).
        extra = 8 if index <= len(REPRODUCERS) else 1
        triples = choose_triples(data, args.triples * extra, rng)
        runs += 2 + 2 * (len(cuts) + len(triples))
        for finding in check(driver, data, cuts, triples):
            findings.append(finding)
            print(f"case {index}: {finding}", flush=True)
        if len(findings) >= args.max_findings:
            break
        if index % 1000 == 0:
            elapsed = time.monotonic() - start
            print(
                f"{index} cases, {runs} connections, {elapsed:.0f} s", file=sys.stderr, flush=True
            )
    elapsed = time.monotonic() - start
    total = f"{index} cases, {runs} connections, {len(findings)} findings"
    print(f"seed {args.seed}: {total}, {elapsed:.0f} s")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
