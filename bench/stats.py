"""Small statistics for benches on a noisy machine: ABBA order, medians, bootstrap intervals."""

from __future__ import annotations

import random
import statistics
import sys
from collections.abc import Callable, Sequence


def abba(pairs: int) -> list[tuple[str, str]]:
    """The order of each pair: A,B then B,A then A,B …, so drift hits both variants alike."""
    return [("A", "B") if i % 2 == 0 else ("B", "A") for i in range(pairs)]


def alternated(pairs: int, run_a: Callable[[], float], run_b: Callable[[], float],
               fmt: str = "{:.3f} s") -> tuple[list[float], list[float]]:
    """The values of ``run_a`` and ``run_b`` called in ABBA order, each pair logged to
    stderr with ``fmt``."""
    a: list[float] = []
    b: list[float] = []
    for n, order in enumerate(abba(pairs)):
        for variant in order:
            (a if variant == "A" else b).append((run_a if variant == "A" else run_b)())
        print(f"pair {n + 1}: A {fmt.format(a[-1])}, B {fmt.format(b[-1])}", file=sys.stderr,
              flush=True)
    return a, b


def median_interval(values: Sequence[float], level: float = 0.90, draws: int = 5000,
                    seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median and its bootstrap ``level`` interval."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values)))
                     for _ in range(draws))
    tail = (1 - level) / 2
    return (statistics.median(values), medians[int(tail * draws)],
            medians[int((1 - tail) * draws) - 1])


def ratio_summary(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Per-pair ratios b/a: their median with a bootstrap 90 % interval, and both medians."""
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    mid, low, high = median_interval(ratios)
    return {"ratio": round(mid, 3), "ci_low": round(low, 3), "ci_high": round(high, 3),
            "median_a": round(statistics.median(a), 3),
            "median_b": round(statistics.median(b), 3),
            "pairs": len(ratios), "ratios": [round(r, 3) for r in ratios]}
