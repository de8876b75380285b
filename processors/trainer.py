"""Trainer: retrains the models from events.interactions, gates every candidate, publishes it.

Responsibilities:
- follow events.interactions (every partition assigned from offset 0, no consumer group:
  a model needs the whole log), keeping the log in memory and counting what arrived since
  the log offsets the last version was trained at (`models.retrain.new_since`);
- retrain when `models.retrain.RetrainTrigger` says so (daily by default, or after
  `trainer.min_new_interactions`), with `models.train.train` on the log strictly before
  the hold-out's cut-off and the catalog of catalog.items; `trainer.features=feast`
  refreshes the Feast offline store from the log first (the features backfill) and trains
  on its point-in-time features, as `streamrec train --features feast` does;
- judge the candidate against the promoted model on the fresh hold-out
  (`models.retrain.judge`: bootstrap gate on NDCG@20 and Recall@20), write the verdict and
  its figures into both manifests, publish the candidate to the registry whatever the
  verdict, announce it on registry.changes (`action="publish"`, `gate`), and promote it
  (`action="promote"`) only when it passed and `trainer.promote` is on; with
  `trainer.rollout=canary` (and a promoted ranker to compare with) a passed candidate
  starts a canary instead (`processors/rollout.py`), which the rollout controller promotes
  or rolls back on live figures;
- run at low priority: niceness `trainer.nice`, CPUs `trainer.cpus` (sched_setaffinity),
  `trainer.threads` torch threads; metrics, heartbeat and a status hash
  (`streamrec:trainer:<group>`).

Failure policy: a malformed interaction is skipped and counted (the other consumers of the
topic dead-letter it). A training that fails (bad data, a model error, a bug) is logged and
waits for the next trigger; nothing is published, because the registry publishes a version only
once its directory is complete. A broker failure ends the worker (`metrics.exit_stuck`:
the heartbeat and /readyz say why); on restart it reads the log again and counts new
interactions from the newest version's manifest. A stop during a training abandons that
candidate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import faust
import numpy as np
import pandas as pd
import redis

from streamrec.errors import StreamRecError
from streamrec.features.errors import FeatureError
from streamrec.infra.redis_clients import sync_client
from streamrec.infra.settings import Settings, TrainerSettings
from streamrec.models.dataset import COLUMNS, load_catalog
from streamrec.models.errors import ModelError
from streamrec.models.ranker import RankerModel
from streamrec.models.registry import ModelRegistry, RegistryError
from streamrec.models.retrain import (
    GATE,
    LOG_OFFSETS,
    STAGE,
    TRAINED_BEFORE,
    GateOutcome,
    RetrainTrigger,
    Trigger,
    holdout_cutoff,
    judge,
    new_since,
    shuffle_items,
    split_at,
    trained_before,
)
from streamrec.models.train import RANKER, RETRIEVER, train
from streamrec.processors.rollout import RolloutController
from streamrec.streams import codecs, metrics
from streamrec.streams.app import create_app
from streamrec.streams.errors import DeliveryError, TopicReadError
from streamrec.streams.producer import latency_producer, produce_event
from streamrec.streams.table_reader import TopicReader, read_table
from streamrec.topics import (
    CATALOG_ITEMS,
    EVENTS_INTERACTIONS,
    REGISTRY_CHANGES,
    CatalogItem,
    Interaction,
    RegistryChange,
)
from streamrec.topics.errors import SchemaError

NAME = "trainer"
SOURCE = f"kafka:{EVENTS_INTERACTIONS.name}"
KINDS = (RANKER, RETRIEVER)
log = logging.getLogger(__name__)


class TrainerStopped(StreamRecError):
    """The trainer's loop ended (the worker stops with it)."""


def status_key(group: str) -> str:
    """Redis hash of a trainer's state: events, new interactions, last candidate and verdict."""
    return f"streamrec:trainer:{group}"


def bound_cpu(cfg: TrainerSettings) -> dict[str, Any]:
    """Lower this process's priority and bound its CPUs. On Linux niceness and affinity are
    per thread and inherited by threads created later, so every thread that exists now is
    set (and torch's pool, created by the training thread, inherits them)."""
    import torch

    tids = [int(t) for t in os.listdir("/proc/self/task")]
    for tid in tids:
        if cfg.nice and os.getpriority(os.PRIO_PROCESS, tid) < cfg.nice:
            os.setpriority(os.PRIO_PROCESS, tid, cfg.nice)
        if cfg.cpus:
            os.sched_setaffinity(tid, cfg.cpus)
    torch.set_num_threads(cfg.threads)
    return {
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "cpus": sorted(os.sched_getaffinity(0)),
        "threads": cfg.threads,
    }


class InteractionLog:
    """events.interactions as read so far: rows for training and the next offset per partition."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, str, float, int, int, int]] = []
        self.positions: dict[int, int] = {}
        self.malformed = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, messages: Iterable[Any]) -> int:
        """Append confluent-kafka messages; returns how many were valid interactions."""
        added = 0
        for msg in messages:
            partition, offset = msg.partition(), msg.offset()
            self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)
            try:
                event = codecs.decode_json(Interaction, msg.value())
            except SchemaError:
                self.malformed += 1
                continue
            rating = np.nan if event.rating is None else event.rating
            ts = int(event.ts.timestamp())
            self._rows.append((event.user_id, event.item_id, rating, ts, partition, offset))
            added += 1
        return added

    def frame(self) -> pd.DataFrame:
        """(user_id, item_id, rating, ts, seq), seq from (ts, partition, offset): the same log
        gives the same frame (and model version) however the partitions interleaved."""
        df = pd.DataFrame(
            self._rows, columns=["user_id", "item_id", "rating", "ts", "partition", "offset"]
        )
        df = df.sort_values(["ts", "partition", "offset"], kind="stable").reset_index(drop=True)
        df["seq"] = np.arange(len(df))
        df["rating"] = df["rating"].astype(float)
        return df[COLUMNS]


class Outbox(Protocol):
    """registry.changes (`ProducerOutbox`)."""

    def send(self, change: RegistryChange) -> None: ...


class ProducerOutbox:
    def __init__(self, settings: Settings) -> None:
        self.producer = latency_producer(settings)

    def send(self, change: RegistryChange) -> None:
        produce_event(self.producer, REGISTRY_CHANGES, change)
        if self.producer.flush(10.0):
            raise DeliveryError(f"registry change for {change.version} not acknowledged")


class StatusBoard:
    """The status hash; best effort (for people, tests and the dashboard)."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.store = sync_client(settings, socket_timeout=2.0)
        self.key = status_key(group)

    def write(self, fields: Mapping[str, str | int | float]) -> None:
        try:
            self.store.hset(self.key, mapping=dict(fields))
        except redis.RedisError as exc:
            log.warning("trainer status not written: %s", exc)


def _natural(item: CatalogItem) -> tuple[int, str]:
    return (len(item.item_id), item.item_id)  # numeric ids in numeric order


class Trainer:
    """Decides when to retrain, trains, gates, publishes and promotes."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        outbox: Outbox,
        status: StatusBoard,
        group: str,
    ) -> None:
        self.settings = settings
        self.cfg = settings.trainer
        self.registry = registry
        self.outbox = outbox
        self.status = status
        self.group = group
        self.log = InteractionLog()
        newest = registry.list(RANKER)[-1:] or [None]
        last = newest[0]
        extra = (last.manifest.model_extra or {}) if last else {}
        self.trained_at: dict[int, int] = {
            int(p): int(o) for p, o in extra.get(LOG_OFFSETS, {}).items()
        }
        self.trigger = RetrainTrigger(
            self.cfg, last.manifest.created_at.timestamp() if last else None
        )
        self.trainings = 0

    def new_interactions(self) -> int:
        return new_since(self.log.positions, self.trained_at)

    def due(self, now: float) -> Trigger | None:
        return self.trigger.due(now, self.new_interactions())

    def catalog(self) -> list[CatalogItem]:
        table = read_table(
            self.settings.kafka_config(), CATALOG_ITEMS, group=f"{self.group}-catalog"
        )
        items = [e for e in table.rows.values() if isinstance(e, CatalogItem) and e.op == "upsert"]
        return sorted(items, key=_natural) if items else load_catalog(self.settings)

    def retrain(self, trigger: Trigger) -> GateOutcome | None:
        """One training, gated; None when there was nothing fresh to train and judge on."""
        started, cpu0 = time.perf_counter(), _cpu_seconds()
        offsets = dict(self.log.positions)
        self.trigger.trained(time.time())  # failed or not, the next one waits for its trigger
        self.trained_at = offsets
        events = self.log.frame()
        promoted = self.registry.promoted(RANKER)
        not_before = (
            trained_before(promoted.manifest.model_extra or {}, promoted.manifest.data_window)
            if promoted
            else None
        )
        cutoff = holdout_cutoff(events, self.cfg.holdout_share, not_before)
        before, after = split_at(events, cutoff)
        if before.empty or after.empty:
            self._report(
                "idle", reason=f"no fresh hold-out after {cutoff} (promoted model's cut-off)"
            )
            return None
        self._report("training", trigger=trigger.reason)
        if self.cfg.features == "feast":  # the offline store, brought up to this log
            from streamrec.features.backfill import run_backfill
            from streamrec.features.feast_store import apply

            apply(self.settings)
            run_backfill(self.settings, write_online=False)
        training = (
            shuffle_items(before, self.settings.models.seed)
            if (self.cfg.debug_shuffle_items)
            else before
        )
        outcome: list[GateOutcome] = []

        def gate_fields(model: RankerModel) -> dict[str, Any]:
            current = RankerModel.load(promoted.path, device=model.device) if promoted else None
            verdict = judge(
                model,
                current,
                before,
                after,
                cutoff,
                self.cfg,
                self.settings.models.ranker_depth,
                self.settings.models.seed,
            )
            outcome.append(verdict)
            return {
                GATE: verdict.model_dump(mode="json"),
                STAGE: "gate-passed" if verdict.passed else "gate-failed",
                TRAINED_BEFORE: cutoff,
                LOG_OFFSETS: {str(p): o for p, o in offsets.items()},
                "trigger": trigger.reason,
                "trainer": {
                    "cpu_seconds": round(_cpu_seconds() - cpu0, 2),
                    "wall_seconds": round(time.perf_counter() - started, 2),
                    "threads": self.cfg.threads,
                    "nice": os.getpriority(os.PRIO_PROCESS, 0),
                    "cpus": sorted(os.sched_getaffinity(0)),
                    "debug_shuffle_items": self.cfg.debug_shuffle_items,
                },
            }

        result = train(
            self.settings,
            source=SOURCE,
            events=training,
            items=self.catalog(),
            retriever_epochs=self.cfg.retriever_epochs or None,
            ranker_epochs=self.cfg.ranker_epochs or None,
            features=self.cfg.features,
            evaluation=self.cfg.split_evaluation,
            threads=self.cfg.threads,
            manifest_extra=gate_fields,
        )
        if result.reused or not outcome:
            self._report("idle", reason=f"{result.ranker.version} was trained already")
            return None
        verdict = outcome[0]
        version = result.ranker.version
        for kind in KINDS:
            self.outbox.send(
                RegistryChange(
                    kind=kind, name=kind, version=version, action="publish", gate=_gate(verdict)
                )
            )
        stage = self.release(version, verdict, promoted is not None)
        promoted_now = stage == "promoted"
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu0
        self.trainings += 1
        metrics.PROCESSING_SECONDS.labels(NAME).observe(seconds)
        log.info(
            "trainer: %s (%s) %s in %.1f s (%.1f CPU s): %s%s",
            version,
            trigger.reason,
            "passed" if verdict.passed else "stopped by the gate",
            seconds,
            cpu,
            verdict.reason,
            ", promoted" if promoted_now else "",
        )
        self._report(
            "idle",
            last_version=version,
            last_trigger=trigger.reason,
            last_stage=stage,
            last_passed=int(verdict.passed),
            reason=verdict.reason,
            last_seconds=round(seconds, 2),
            last_cpu_seconds=round(cpu, 2),
            trainings=self.trainings,
        )
        return verdict

    def release(self, version: str, verdict: GateOutcome, has_promoted: bool) -> str:
        """A judged candidate's next stage: promoted, a canary (`trainer.rollout=canary`
        with a promoted ranker to compare with), or the gate's stage when it is held back."""
        if not (verdict.passed and self.cfg.promote):
            return _stage(verdict)
        if self.cfg.rollout == "canary" and has_promoted:
            # The rollout controller takes it from the first share to everyone, or back.
            RolloutController(self.settings, self.registry, self.outbox, _no_figures).start(version)
            return "canary"
        for kind in KINDS:
            change = self.registry.promote(kind, version)
            self.outbox.send(change.model_copy(update={"gate": _gate(verdict)}))
        return "promoted"

    def _report(self, state: str, **fields: str | int | float) -> None:
        self.status.write(
            {
                "state": state,
                "events": len(self.log),
                "malformed": self.log.malformed,
                "new_interactions": self.new_interactions(),
                **fields,
            }
        )


def _no_figures(*_: object) -> Any:
    raise AssertionError("starting a canary reads no figures")


def _gate(outcome: GateOutcome) -> dict[str, Any]:
    return outcome.model_dump(mode="json")


def _stage(outcome: GateOutcome) -> str:
    return "gate-passed" if outcome.passed else "gate-failed"


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class TrainerLoop:
    """Follows the log and retrains when due; `run(stop)` in a thread of the worker."""

    def __init__(self, trainer: Trainer, reader: TopicReader) -> None:
        self.trainer = trainer
        self.reader = reader
        self.caught_up = False

    def run(self, stop: threading.Event) -> None:
        try:
            self.trainer._report("reading")
            while not stop.is_set():
                self.step()
        finally:
            self.reader.close()

    def step(self) -> None:
        trainer = self.trainer
        added = trainer.log.add(self.reader.poll(10_000, timeout_s=trainer.cfg.poll_s))
        if added:
            metrics.EVENTS_PROCESSED.labels(NAME, EVENTS_INTERACTIONS.name).inc(added)
        new = trainer.new_interactions()
        metrics.QUEUE_DEPTH.labels(NAME, "new_interactions").set(new)
        if not self.reader.caught_up:
            return
        trigger = trainer.due(time.time())
        if trigger is None:
            if added or not self.caught_up:
                trainer._report("following")
            self.caught_up = True
            return
        try:
            trainer.retrain(trigger)
        except (TopicReadError, DeliveryError):
            raise  # the broker: the worker ends and is restarted
        except (ModelError, RegistryError, FeatureError) as exc:
            log.error("trainer: training failed, waiting for the next trigger: %s", exc)
            trainer._report("idle", reason=f"training failed: {exc}")
        except Exception as exc:  # a bug or a bad model: retrying at once would only loop
            log.exception("trainer: training failed, waiting for the next trigger")
            trainer._report("idle", reason=f"training failed: {type(exc).__name__}: {exc}")


def open_loop(settings: Settings, group: str) -> TrainerLoop:
    reader = TopicReader(
        settings.kafka_config(),
        EVENTS_INTERACTIONS,
        group=f"{group}-reader",
        config={"fetch.max.bytes": 52_428_800},
        timeout_s=30.0,
        raise_on_error=True,
    )
    trainer = Trainer(
        settings,
        ModelRegistry(settings),
        ProducerOutbox(settings),
        StatusBoard(settings, group),
        group,
    )
    return TrainerLoop(trainer, reader)


def build(settings: Settings, group: str | None = None) -> faust.App:
    group = group or f"streamrec-{NAME}"
    bounds = bound_cpu(settings.trainer)  # before any other thread exists: they inherit it
    log.info("trainer: nice %(nice)s, cpus %(cpus)s, %(threads)s torch threads", bounds)
    app = create_app(settings, group)
    metrics.attach(app, settings, NAME)
    failure: list[BaseException] = []

    def run(stop: threading.Event) -> None:
        try:
            bound_cpu(settings.trainer)
            open_loop(settings, group).run(stop)
        except BaseException as exc:  # reported to the worker's task, which stops the worker
            failure.append(exc)
            raise

    @app.task
    async def retrain() -> None:
        stop = threading.Event()
        thread = threading.Thread(target=run, args=(stop,), name=NAME, daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                await asyncio.sleep(0.2)
            if failure:  # the broker or the registry failed: end, so that it is restarted
                metrics.exit_stuck(f"{NAME}: {type(failure[0]).__name__}: {failure[0]}"[:2000])
            raise TrainerStopped(f"{NAME}: its loop ended")
        finally:
            stop.set()
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 10.0)

    return app
