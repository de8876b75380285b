"""Item -> users whose precomputed candidate list (`cand:{user_id}`) holds the item.

Kept from the candidate lists the candidates processor announces on the candidates topic, so
a removal (or an update of an item) refreshes exactly the users who could be shown it.
"""

from __future__ import annotations

from collections.abc import Iterable


class ReverseIndex:
    """Two maps kept in step: user -> items and item -> users."""

    def __init__(self) -> None:
        self._items_of: dict[str, frozenset[str]] = {}
        self._users_of: dict[str, set[str]] = {}

    def set_candidates(self, user_id: str, item_ids: Iterable[str]) -> None:
        new = frozenset(item_ids)
        old = self._items_of.get(user_id, frozenset())
        for item in old - new:
            users = self._users_of.get(item)
            if users is not None:
                users.discard(user_id)
                if not users:
                    del self._users_of[item]
        for item in new - old:
            self._users_of.setdefault(item, set()).add(user_id)
        if new:
            self._items_of[user_id] = new
        else:
            self._items_of.pop(user_id, None)

    def users_of(self, item_id: str) -> set[str]:
        return set(self._users_of.get(item_id, ()))

    def __len__(self) -> int:
        return len(self._items_of)
