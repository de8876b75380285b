"""Re-ranking: from scored candidates to the k items a user is shown.

Responsibilities (in order):
- business rules: never serve a removed item, an item the user has just seen or already
  interacted with, or the same item twice;
- genre diversity: greedily take items best first, deferring an item while any of its genres
  already fills `max_genre_share` of the k slots; deferred items fill what is left, best
  first, so diversity never leaves the list short.

Pure functions over in-memory data: no I/O, cheap enough for every request.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from serving.ports import ItemInfo


def rerank(
    scored: Iterable[tuple[str, float]],
    k: int,
    exclude: set[str],
    item_info: Callable[[str], ItemInfo | None],
    max_genre_share: float = 0.4,
) -> list[tuple[str, float]]:
    """The top-k of `scored` (item id, score; any order) after the rules and diversity."""
    ordered = sorted(scored, key=lambda p: p[1], reverse=True)
    cap = max(1, math.ceil(k * max_genre_share))
    genre_counts: Counter[str] = Counter()
    chosen: list[tuple[str, float]] = []
    deferred: list[tuple[str, float]] = []
    seen_ids: set[str] = set()
    for item_id, score in ordered:
        if item_id in exclude or item_id in seen_ids:
            continue
        seen_ids.add(item_id)
        info = item_info(item_id)
        genres: Sequence[str] = info.genres if info is not None else ()
        if any(genre_counts[g] >= cap for g in genres):
            deferred.append((item_id, score))
            continue
        chosen.append((item_id, score))
        genre_counts.update(genres)
        if len(chosen) == k:
            return chosen
    # Backfill in score order, keeping the list's order by score.
    chosen.extend(deferred[: k - len(chosen)])
    chosen.sort(key=lambda p: p[1], reverse=True)
    return chosen
