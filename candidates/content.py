"""The `content` source: items whose content is closest to a user's session, from the live index.

Responsibilities:
- read the vector index snapshots (`vectors.IndexReader`), created lazily and
  refreshed with one `stat` of the index pointer per call to `refresh` (the processor calls
  it, off the event loop, before each rebuild, so a refresh command sent after a new snapshot
  was promoted sees that snapshot): items added to the catalog after training are found;
- per batch of users: their session items' vectors (reconstructed from the same snapshot),
  ONE batched FAISS search over all of them, and per user the recency-weighted sum of the
  similarities (the newest item weighing most), seen and removed items left out;
- fall back to the retriever's shipped content vectors (`RetrieverModel.similar_content`)
  when no snapshot exists yet, or for a user none of whose session items is in it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from streamrec.errors import StreamRecError
from streamrec.infra.settings import Settings
from streamrec.models.retriever import Hit, RetrieverModel
from streamrec.vectors import IndexReader, LoadedSnapshot

log = logging.getLogger(__name__)
DECAY = 0.8  # per step back in the session, as the co-visitation source


class ContentSource:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reader: IndexReader | None = None

    @property
    def version(self) -> str | None:
        return self.reader.version if self.reader is not None else None

    def refresh(self) -> bool:
        """Swap in a newly promoted snapshot (blocking: run it off the event loop).

        Costs one `stat` when nothing changed; True when a new snapshot was loaded.
        """
        if self.reader is None:
            # poll_s=inf: the reader never refreshes on its own (inside a search, on the
            # event loop); only this method loads snapshots.
            self.reader = IndexReader(self.settings, poll_s=float("inf"))
        try:
            changed = self.reader.refresh()
        except (OSError, StreamRecError) as exc:  # keep the snapshot we have
            log.error("cannot refresh the vector index (keeping %s): %s", self.version, exc)
            return False
        if changed:
            log.info("content source: index snapshot %s", self.version)
        return changed

    def _snapshot(self) -> LoadedSnapshot | None:
        if self.reader is None or self.reader.version is None:
            return None
        return self.reader.snapshot

    def similar(
        self,
        sessions: Sequence[Sequence[str]],
        k: int,
        excludes: Sequence[set[str]],
        retriever: RetrieverModel | None,
    ) -> list[list[Hit]]:
        """Per session (items newest first), its k nearest items by content."""
        out: list[list[Hit]] = [[] for _ in sessions]
        if k <= 0:
            return out
        snap = self._snapshot()
        rows: list[np.ndarray] = []
        owner: list[tuple[int, int]] = []  # (session index, age) of each query row
        if snap is not None:
            for s, items in enumerate(sessions):
                for age, item in enumerate(items):
                    fid = snap.by_item.get(item)
                    if fid is not None:
                        rows.append(snap.index.reconstruct(int(fid)))
                        owner.append((s, age))
        found = {s for s, _ in owner}
        if rows and snap is not None:
            depth = min(k + max(len(e) for e in excludes), snap.index.ntotal)
            queries = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
            scores, labels = snap.index.search(queries, depth)
            totals: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for (s, age), row_s, row_l in zip(owner, scores, labels, strict=True):
                weight = DECAY**age
                for score, label in zip(row_s.tolist(), row_l.tolist(), strict=True):
                    item = snap.by_id.get(label) if label >= 0 else None
                    if item is not None and item not in excludes[s]:
                        totals[s][item] += weight * score
            for s, total in totals.items():
                out[s] = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        if retriever is not None:
            for s, items in enumerate(sessions):
                if s not in found and items:
                    out[s] = retriever.similar_content(list(items), k, excludes[s])
        return out
