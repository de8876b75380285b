"""`streamrec train`: data -> split -> features -> two models -> evaluation -> registry.

Responsibilities:
- choose the feature source (`feature_source`, the one switch between the raw-log
  computation and a Feast historical retrieval);
- train the two-tower and the ranker, evaluate all four scorers and cold start, and publish
  a "retriever" and a "ranker" version with manifests (metrics, feature schema, data
  window, created at); the ranker's with its training feature profile
  (`feature_profile.json`, the skew check's reference);
- cache: the version name is a hash of the data and the training settings, so training
  the same data twice reuses the published versions (unless `force`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamrec.infra.settings import Settings
from streamrec.models.content import content_vectors
from streamrec.models.dataset import Split, data_hash, load_catalog, load_events, time_split
from streamrec.models.errors import TrainingError
from streamrec.models.evaluate import (
    COLD_START_KS,
    COLD_START_TARGETS,
    CoVisitationScorer,
    Metrics,
    PopularityScorer,
    TwoTowerRankerScorer,
    TwoTowerScorer,
    evaluate,
)
from streamrec.models.feature_profile import save_profile
from streamrec.models.features import FEATURE_COLUMNS, FeatureSource, LogFeatureSource, UserFeatures
from streamrec.models.fit import (
    deterministic,
    fit_ranker,
    fit_two_tower,
    seed_everything,
    sequence_recipe,
)
from streamrec.models.items import ItemTable, build_item_table
from streamrec.models.ranker import RankerModel, pick_device
from streamrec.models.registry import Manifest, ModelRegistry, ModelVersion
from streamrec.models.retriever import save_retriever
from streamrec.topics import CatalogItem

RETRIEVER = "retriever"
RANKER = "ranker"


@dataclass
class TrainResult:
    retriever: ModelVersion
    ranker: ModelVersion
    reused: bool
    metrics: dict[str, Metrics] = field(default_factory=dict)
    cold_start: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    model: RankerModel | None = None  # the trained model (None when reused from the registry)


def feature_source(settings: Settings, events: pd.DataFrame, kind: str = "log") -> FeatureSource:
    """Where training features come from (the one switch): "log" computes them point in time
    from `events`; "feast" reads the user features through Feast's historical retrieval
    (the features backfill's Parquet, which must cover the same log)."""
    if kind == "feast":
        from streamrec.models.feast_features import FeastFeatureSource

        return FeastFeatureSource(settings, events)
    if kind != "log":
        raise TrainingError(f"unknown feature source {kind!r}: log | feast")
    return LogFeatureSource(events, settings.models.history_len)


def _config_hash(settings: Settings, epochs: tuple[object, ...]) -> str:
    # The default user tower stays out of the hash: versions trained before the setting
    # existed keep their names (and their cache).
    mean = settings.models.user_tower == "mean"
    exclude = {"device"} | ({"user_tower"} if mean else set())
    payload = settings.models.model_dump_json(exclude=exclude) + repr(epochs)
    if not mean:  # trained with the per-position loss: a new recipe is a new version
        payload += sequence_recipe()
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def _users(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return dict(tuple(frame.sort_values(["ts", "seq"], kind="stable").groupby("user_id")))


def _user_features(user: str, history: pd.DataFrame) -> UserFeatures:
    ratings = history["rating"].dropna()
    return UserFeatures(
        user_id=user,
        recent_items=history["item_id"].tolist(),
        n_interactions=len(history),
        mean_rating=float(ratings.mean()) if len(ratings) else None,
    )


def _test_sets(
    split: Split, table: ItemTable
) -> tuple[list[UserFeatures], list[np.ndarray], list[np.ndarray]]:
    # At test time the validation events are history too (the ranker trained on them), so
    # they are input and excluded from the ranking, as in RecBole's full-sort protocol.
    train, test = _users(pd.concat([split.train, split.valid])), _users(split.test)
    users, exclude, targets = [], [], []
    for user, hist in train.items():
        if user not in test:
            continue
        users.append(_user_features(user, hist))
        exclude.append(table.indices(hist["item_id"].tolist()))
        targets.append(table.indices(test[user]["item_id"].tolist()))
    return users, exclude, targets


def _cold_sets(
    split: Split, table: ItemTable, k: int
) -> tuple[list[UserFeatures], list[np.ndarray], list[np.ndarray]]:
    users, exclude, targets = [], [], []
    for user, events in _users(split.cold).items():
        given, nxt = events.iloc[:k], events.iloc[k : k + COLD_START_TARGETS]
        if nxt.empty:
            continue
        users.append(_user_features(user, given))
        exclude.append(table.indices(given["item_id"].tolist()))
        targets.append(table.indices(nxt["item_id"].tolist()))
    return users, exclude, targets


def _evaluate(
    split: Split, table: ItemTable, model: RankerModel, depth: int
) -> tuple[dict[str, Metrics], dict[str, dict[str, float]]]:
    users, exclude, targets = _test_sets(split, table)
    scorers = [
        PopularityScorer(table),
        CoVisitationScorer(table, split.train),
        TwoTowerScorer(model),
        TwoTowerRankerScorer(model, depth),
    ]
    metrics = {s.name: evaluate(s, users, exclude, targets) for s in scorers}
    cold: dict[str, dict[str, float]] = {}
    for k in COLD_START_KS:
        c_users, c_ex, c_tg = _cold_sets(split, table, k)
        cold[f"k={k}"] = {
            s.name: evaluate(s, c_users, c_ex, c_tg).ndcg_20
            for s in (scorers[0], scorers[2], scorers[3])
        }
    return metrics, cold


def _find_cached(registry: ModelRegistry, version: str) -> tuple[ModelVersion, ModelVersion] | None:
    try:
        return registry.get(RETRIEVER, version), registry.get(RANKER, version)
    except Exception:  # missing or corrupted: train again
        return None


def train(
    settings: Settings,
    source: str = "ml-100k",
    force: bool = False,
    retriever_epochs: int | None = None,
    ranker_epochs: int | None = None,
    device: str | None = None,
    publish: bool = True,
    features: str = "log",
    evaluation: bool = True,
    events: pd.DataFrame | None = None,
    items: list[CatalogItem] | None = None,
    threads: int | None = None,
    manifest_extra: Callable[[RankerModel], dict[str, Any]] | None = None,
) -> TrainResult:
    """Train both models on `source`; `evaluation=False` skips the metric table (tests).

    `events` / `items` give the log and the catalog directly (the trainer worker reads them
    from Kafka; `source` then only labels the manifest); `threads` overrides
    `models.cpu_threads`; `manifest_extra(model)` runs on the trained model just before it
    is published and adds its fields to both manifests (the evaluation gate's verdict)."""
    # Version ids hash the data and config: a second process training the same thing waits
    # for the first, then reuses its versions rather than failing to publish them again.
    with ModelRegistry(settings).training_lock():
        cfg = settings.models
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        events = load_events(settings, source) if events is None else events
        items = load_catalog(settings) if items is None else items
        dhash = data_hash(events, items)
        chash = _config_hash(settings, (retriever_epochs, ranker_epochs, features, evaluation))
        version = f"v{dhash[:10]}-{chash}"
        registry = ModelRegistry(settings)
        if publish and not force and (cached := _find_cached(registry, version)):
            retr, rank = cached
            return TrainResult(
                retriever=retr,
                ranker=rank,
                reused=True,
                metrics={
                    k: Metrics(**v) for k, v in rank.manifest.model_extra["evaluation"].items()
                },
                cold_start=rank.manifest.model_extra["cold_start"],
                seconds={"total": time.perf_counter() - t0},
                device=str(rank.manifest.model_extra.get("device", "")),
            )
        if publish and force and (registry.kind_dir(RANKER) / version).exists():
            version = f"{version}-{int(time.time())}"  # never overwrite a (maybe promoted) version
        dev = pick_device(device or cfg.device)
        seed_everything(cfg.seed, threads or cfg.cpu_threads)
        split = time_split(events, cfg.cold_start_users, cfg.seed)
        timings["load"] = time.perf_counter() - t0

        t = time.perf_counter()
        vectors = content_vectors(settings, items)
        timings["content_vectors"] = time.perf_counter() - t
        ratings = split.train.groupby("item_id")["rating"]
        table = build_item_table(
            items, vectors, ratings.size().to_dict(), ratings.mean().fillna(0).to_dict()
        )
        source_of_features = feature_source(settings, split.train, features)

        t = time.perf_counter()
        with deterministic():
            two_tower = fit_two_tower(
                cfg, table, source_of_features, split.train, dev, retriever_epochs
            )
        timings["two_tower"] = time.perf_counter() - t
        t = time.perf_counter()
        known = {u: table.indices(g["item_id"].tolist()) for u, g in split.train.groupby("user_id")}
        with deterministic():
            fitted = fit_ranker(
                cfg, table, two_tower, source_of_features, split.valid, known, dev, ranker_epochs
            )
        model = RankerModel(fitted.net, table, version, dev)
        timings["ranker"] = time.perf_counter() - t

        t = time.perf_counter()
        metrics, cold = _evaluate(split, table, model, cfg.ranker_depth) if evaluation else ({}, {})
        timings["evaluate"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0

        result = TrainResult(
            retriever=None,  # type: ignore[arg-type]
            ranker=None,  # type: ignore[arg-type]
            reused=False,
            metrics=metrics,
            cold_start=cold,
            seconds=timings,
            device=str(dev),
            model=model,
        )
        if publish:
            extra = {
                "evaluation": {k: v.model_dump() for k, v in metrics.items()},
                "cold_start": cold,
                "training_seconds": timings,
                "device": str(dev),
                "data_hash": dhash,
                "source": source,
                "features": features,
                "settings": cfg.model_dump(),
            }
            if manifest_extra is not None:
                extra |= manifest_extra(model)
            flat = {
                f"test.{k}.{m}": v for k, mm in metrics.items() for m, v in mm.model_dump().items()
            }
            schema = {
                "features": list(FEATURE_COLUMNS),
                "point_in_time": "strictly before the label event",
                "item_features": ["genres", "year", "popularity", "mean_rating", "content(384)"],
                "embedding_model": settings.embedding.model,
            }
            result.retriever = _publish(
                registry,
                RETRIEVER,
                version,
                flat,
                schema,
                split,
                extra,
                lambda d: save_retriever(model, d),
            )

            def save_ranker(directory: Path) -> None:
                model.save(directory)
                save_profile(directory, fitted.profile)  # the skew check's reference

            result.ranker = _publish(
                registry, RANKER, version, flat, schema, split, extra, save_ranker
            )
        return result


def _publish(registry, kind, version, metrics, schema, split, extra, save) -> ModelVersion:  # type: ignore[no-untyped-def]
    staging = registry.new_version_dir(kind, version)
    save(staging)
    manifest = Manifest(
        kind=kind,
        version=version,
        metrics=metrics,
        feature_schema=schema,
        data_window=split.window(),
        **extra,
    )
    return registry.publish(kind, staging, manifest)
