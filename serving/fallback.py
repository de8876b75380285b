"""The fallback chain: FULL -> STALE_FEATURES -> SIMPLE_RANKING -> POPULAR.

Responsibilities:
- the order of degradation levels, and `worst` to combine what each dependency allowed;
- the rankings that need no model: `simple_ranking` (the candidates' own retrieval scores,
  blended with popularity) and `popular_ranking` (the trending list held in memory, nudged
  towards the genres of the session's recent items for a cold-start user).

Which level applies is decided by the core from what failed:
| what failed or is missing | level |
| --- | --- |
| nothing | FULL |
| user features (missing, older than `features_stale_s`, store down): model runs on the
  last features seen or on empty ones | STALE_FEATURES |
| the model (not loaded, breaker open, batch past its deadline) | SIMPLE_RANKING |
| the candidates (none for the user, store down) | POPULAR |
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from serving.ports import ItemInfo
from topics.recs_responses import Level
from topics.stores import CandidateList

LEVELS: tuple[Level, ...] = ("FULL", "STALE_FEATURES", "SIMPLE_RANKING", "POPULAR")


def worst(*levels: Level) -> Level:
    return max(levels, key=LEVELS.index)


def simple_ranking(
    candidates: CandidateList, popularity: Callable[[str], float], weight: float = 1e-6
) -> list[tuple[str, float]]:
    """Candidates by their retrieval score, with popularity (log-scaled) as a tie breaker."""
    return [
        (c.item_id, c.score + weight * math.log1p(max(0.0, popularity(c.item_id))))
        for c in candidates.items
    ]


def popular_ranking(
    popular: Sequence[tuple[str, float]],
    recent_item_ids: Sequence[str],
    item_info: Callable[[str], ItemInfo | None],
    boost: float = 0.5,
) -> list[tuple[str, float]]:
    """The trending list, its scores normalised to [0, 1]; with a session, items sharing the
    genres of its recent items move up (cold start: personal from the first click)."""
    if not popular:
        return []
    top = max(score for _, score in popular) or 1.0
    genres: Counter[str] = Counter()
    for item_id in recent_item_ids:
        info = item_info(item_id)
        if info is not None:
            genres.update(info.genres)
    total = sum(genres.values())
    out = []
    for item_id, score in popular:
        s = score / top
        if total:
            info = item_info(item_id)
            if info is not None and info.genres:
                s += boost * sum(genres[g] for g in info.genres) / total
        out.append((item_id, s))
    return out
