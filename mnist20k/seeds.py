"""The seeds of many runs, as --seeds writes them (sweep's runs, tune's trials)."""

from __future__ import annotations

import re

from mnist20k.errors import UsageError


def parse_seeds(values: list[str]) -> list[int]:
    """["1-5"], ["1 3 7"], ["1,3", "8-9"] -> the seeds in order given, each once."""
    seeds: list[int] = []
    for token in re.split(r"[\s,]+", " ".join(values).strip()):
        if not token:
            continue
        low, dash, high = token.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise UsageError(f"--seeds: {token!r} is not a seed or a range like 1-5 (seeds are whole numbers >= 0)")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise UsageError(f"--seeds: {token} is a reversed range; write {last}-{first}")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    if not seeds:
        raise UsageError("--seeds: no seeds given; e.g. --seeds 1-5 or --seeds '1 3 7'")
    return seeds
