"""The time from a regression to its rollback: a canary whose live CTR is worse, on the stack.

In a fresh stack of its own: the catalog, trending lists, candidates and features of the
first `--users` ML-100K users are seeded (`scenarios.seed`), one trained ranker is promoted
as the control and a copy of it published as the candidate. A serving worker (`streamrec serve`,
a child process) answers; the analytics sink runs in a thread here, so that the controller
in this process can read the same embedded ClickHouse. A client sends `--rate` requests
per second over the users; after each answer it clicks the first item with probability
`--ctr` for the control's users and `--ctr` x (1 - `--drop`) for the canary's.

At t0 the candidate starts at the first rollout share (5%): the regression is live from its
first answer. With `--fail` the canary's every scoring fails instead
(`faults.canary_score_fails`): its users get the control's answers, and the regression is
the canary's error rate. The controller judges every `--interval` seconds. Printed: when
the controller decided (the rollback or promotion on registry.changes), when the serving
worker stopped serving the canary (`serving_canary_share` 0 on /metrics), the figures it
decided on, and every answer that was not a 200.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import threading
import time

import httpx

from benchmarks.common import bench_stack, machine
from streamrec.analytics.experiments import canary_bucket, canary_limit
from streamrec.analytics.store import store_session
from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.models.registry import ModelRegistry
from streamrec.processors.analytics_sink import open_sink
from streamrec.processors.rollout import RolloutController, clickhouse_figures
from streamrec.processors.trainer import ProducerOutbox
from streamrec.scenarios.seed import MovieLens, seed_candidates, seed_popular, seed_user_features
from streamrec.serving.process import ServeProcess
from streamrec.streams.catalog import publish_items
from streamrec.streams.producer import bulk_producer, produce_event
from streamrec.topics import EVENTS_INTERACTIONS, Interaction
from streamrec.topics.base import utcnow

RANKER = "ranker"


def trained_ranker() -> str:
    """A one-epoch ranker in the data cache (reused when trained already)."""
    from streamrec.models.train import train

    base = Settings()
    cached = base.with_overrides(stack={"state_dir": base.data.cache_dir / "test-ranker"})
    return str(train(cached, retriever_epochs=1, ranker_epochs=1).ranker.path)


def install(settings: Settings, source: str, version: str) -> None:
    registry = ModelRegistry(settings)
    target = registry.kind_dir(RANKER) / version
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest))


def figures(settings: Settings):  # type: ignore[no-untyped-def]
    """The controller's figures, each read on a client opened and closed for it."""

    def read(state, until):  # type: ignore[no-untyped-def]
        with store_session(settings) as ch:
            return clickhouse_figures(settings, ch)(state, until)

    return read


class Client(threading.Thread):
    """Open-loop requests at `rate`/s; clicks by side; counts non-200 answers."""

    def __init__(self, url: str, settings: Settings, users: list[str], args, version: str):  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.url, self.settings, self.users, self.args = url, settings, users, args
        self.version = version
        self.stop = threading.Event()
        self.sent = self.failed = self.clicks = 0
        self.failures: list[tuple[float, int, str]] = []
        self.rng = random.Random(0)

    def run(self) -> None:
        producer = bulk_producer(self.settings)
        limit = canary_limit(self.settings.rollout.stages[0])
        period = 1.0 / self.args.rate
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                user = self.users[self.sent % len(self.users)]
                r = http.get(f"/v1/users/{user}/recommendations", params={"k": 5})
                self.sent += 1
                if r.status_code != 200:
                    self.failed += 1
                    self.failures.append((time.monotonic(), r.status_code, r.text[:120]))
                    continue
                items = r.json()["items"]
                canary = canary_bucket(user, self.version) < limit
                ctr = self.args.ctr * ((1 - self.args.drop) if canary else 1.0)
                if items and self.rng.random() < ctr:
                    self.clicks += 1
                    click = Interaction(
                        event_id=f"bench-click-{self.sent}",
                        user_id=user,
                        item_id=items[0]["item_id"],
                        kind="click",
                        ts=utcnow(),
                    )
                    produce_event(producer, EVENTS_INTERACTIONS, click)
                    producer.poll(0)
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))
        producer.flush(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--rate", type=float, default=100.0, help="requests per second")
    p.add_argument("--ctr", type=float, default=0.3, help="control's click probability")
    p.add_argument("--drop", type=float, default=0.5, help="the canary's relative CTR loss")
    p.add_argument("--min-impressions", type=int, default=200)
    p.add_argument(
        "--fail",
        action="store_true",
        help="the canary's every scoring fails (faults.canary_score_fails): its users are "
        "answered by the control, and the regression is its error rate",
    )
    p.add_argument("--interval", type=float, default=2.0, help="controller period, s")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    print(f"machine: {machine()}")
    source = trained_ranker()
    ml = MovieLens.load(Settings())
    users = ml.users[: args.users]
    with bench_stack() as stack:
        settings = stack.with_overrides(
            analytics={"batch_max_wait_s": 0.5},
            rollout={"min_impressions": args.min_impressions, "interval_s": args.interval},
            serving={"cache_ttl_s": 0.0, "model_poll_s": 0.5, "port": free_port()},
            faults={"canary_score_fails": args.fail},
        )
        publish_items(settings, ml.items)
        seed_popular(settings, ml)
        seed_candidates(settings, ml, users)
        seed_user_features(settings, ml, users)
        install(settings, source, "control")
        install(settings, source, "candidate")
        registry = ModelRegistry(settings)
        registry.promote(RANKER, "control")
        in_canary = sum(
            canary_bucket(u, "candidate") < canary_limit(settings.rollout.stages[0]) for u in users
        )
        print(
            f"users {len(users)} ({in_canary} in the 5% canary), rate {args.rate:g}/s, "
            f"control CTR {args.ctr:.0%}, canary CTR {args.ctr * (1 - args.drop):.0%}, "
            f"min impressions {args.min_impressions}, controller every {args.interval:g} s"
            + (", the canary's scoring fails" if args.fail else "")
        )

        sink = open_sink(settings, group="bench-rollout-sink")
        sink_thread = threading.Thread(target=sink.run, daemon=True)
        sink_thread.start()
        # The serving worker in its own process, as deployed: the controller's and the sink's
        # chDB work in this process must not share its event loop.
        server = ServeProcess(settings).start()
        url = server.url
        client = Client(url, settings, users, args, "candidate")
        client.start()
        time.sleep(5)  # control traffic before the candidate goes live

        ctl = RolloutController(settings, registry, ProducerOutbox(settings), figures(settings))
        ctl.start("candidate")
        t0 = time.monotonic()
        decided_at = gone_at = None
        verdict = change = None
        while time.monotonic() - t0 < args.timeout:
            time.sleep(args.interval)
            result = ctl.step()
            if result is None:
                break
            verdict, change = result
            if change is not None and change.action != "canary":
                decided_at = time.monotonic() - t0
                break
        while decided_at is not None and time.monotonic() - t0 < args.timeout:
            metrics = httpx.get(f"{url}/metrics", timeout=5).text
            if "serving_canary_share 0.0" in metrics:
                gone_at = time.monotonic() - t0
                break
            time.sleep(0.05)  # polling a real condition with a deadline
        time.sleep(2)
        client.stop.set()
        client.join(30)
        server.stop()
        sink.stop()
        sink_thread.join(30)
        print(f"decision: {change.action if change else None}: {verdict.reason if verdict else ''}")
        if change is not None and change.rollout and change.rollout.get("figures"):
            f = change.rollout["figures"]
            print(
                f"figures: canary {f['canary']['impressions']} impressions, CTR "
                f"{f['canary']['ctr']:.1%}; control {f['control']['impressions']}, CTR "
                f"{f['control']['ctr']:.1%}; p99 {f['canary']['p99_ms']:.1f} / "
                f"{f['control']['p99_ms']:.1f} ms"
            )
        print(
            f"candidate live -> {change.action} on registry.changes: {decided_at:.1f} s; -> "
            f"the serving worker's canary share 0 on /metrics: {gone_at:.1f} s"
            if change is not None and decided_at is not None and gone_at is not None
            else "no decision within the timeout"
        )
        print(f"requests {client.sent}, non-200 {client.failed}, clicks {client.clicks}")
        for at, status, text in client.failures:
            print(f"  non-200 at t0{at - t0:+.1f} s: {status} {text}")


if __name__ == "__main__":
    main()
