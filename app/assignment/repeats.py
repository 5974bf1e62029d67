"""Where planned repeats go: far enough from their original that they are not recognised at once.

A repeat shows an earlier main pair again with the sides swapped (consistency check). It comes at
least `repeat_gap(n)` = min(5, n/2) trials (rounded up, at least 1) after its original, n being the
participant's trials after practice. `repeat_places` keeps a plan fillable: allocation goes in
position order and takes any unrepeated main trial far enough back, so it suffices that the k-th
repeat has at least k main trials at least the gap before it.
"""

from __future__ import annotations


def repeat_gap(n: int) -> int:
    """Trials between a repeat and its original, at least: min(5, n/2) for n trials (at least 1)."""
    return max(1, min(5, -(-n // 2)))


def repeat_places(body: list[str], gap: int) -> list[int]:
    """Where a new repeat may be inserted into `body` so that every repeat, in order, still has an
    unrepeated main trial at least `gap` places before it (so allocation in order always finds one)."""
    out = []
    for i in range(1, len(body) + 1):
        trial = body[:i] + ["repeat"] + body[i:]
        mains = [j for j, k in enumerate(trial) if k == "main"]
        repeats = [j for j, k in enumerate(trial) if k == "repeat"]
        if all(sum(m <= r - gap for m in mains) >= n for n, r in enumerate(repeats, start=1)):
            out.append(i)
    return out
