"""Serving latency while the trainer retrains beside it, against without, in one run.

    python -m benchmarks.retrain_serving_bench [--rate 100] [--window 20] [--epochs 12] [--pin]

On a fresh stack of its own, seeded as `benchmarks.serving_bench` seeds it (ML-100K: the
catalog, trending lists, 500 candidates for each user, their features, a trained ranker
promoted) and with ML-100K's log on events.interactions, one serving process (`streamrec
serve`, response cache off) takes an open-loop constant-rate load (vegeta, or hey) in
windows of `--window` seconds:
1. without a retrain;
2. while `streamrec worker trainer` trains with its defaults (nice 10, 1 torch thread);
3. without;
4. while a trainer trains unbounded (nice 0, as many torch threads as cores): what the
   bound is for;
5. without.
A trainer window starts once the worker reports `training` and must end before the worker
reports anything else: the trainer's epochs (`--epochs`, each model) are raised so that one
training outlasts a window; the run says if one did not. Printed per window: p50, p99,
errors, the trainer's state at the window's end, and the p99 ratios to the mean of the
windows without. One JSON line, `retrain-serving:`.

`--pin` is the layout that keeps the trainer off the server's core: the serving process on
core 0; Kafka, Redis, vegeta and the trainer (`trainer.cpus` [1]) on core 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import redis

from benchmarks.common import bench_stack, machine
from benchmarks.load_tools import ensure_load_tool
from benchmarks.serving_bench import attack, pin_tree, promote, stack_pids, trained_ranker
from benchmarks.trainer_bench import produce
from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.models.dataset import load_events
from streamrec.processors.trainer import NAME, status_key
from streamrec.scenarios.seed import MovieLens, seed_candidates, seed_popular, seed_user_features
from streamrec.serving.process import ServeProcess
from streamrec.streams.catalog import publish_items
from streamrec.streams.worker_process import WorkerProcess

GROUP = "bench-retrain-serving"


def trainer_state(store: redis.Redis) -> str:
    raw = store.hget(status_key(GROUP), "state")
    return raw.decode() if raw else ""


def row(label: str, res: dict, state: str) -> dict:
    """One window's figures from `attack`'s result; `state`: the trainer's at its end."""
    return {
        "window": label,
        "p50_ms": round(res["all"]["p50"], 1),
        "p99_ms": round(res["all"]["p99"], 1),
        "sent": res["sent"],
        "non_200": res["sent"] - res["ok"],
        "trainer_state_at_end": state,
    }


def wait_for_training(trainer: WorkerProcess, store: redis.Redis, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while trainer_state(store) != "training":
        if not trainer.alive():
            raise RuntimeError(trainer.log.read_text()[-3000:])
        if time.monotonic() > deadline:
            raise TimeoutError(f"the trainer did not start training in {timeout_s:g} s")
        time.sleep(0.2)  # polling the trainer's status with a deadline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=100, help="requests per second")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per window")
    parser.add_argument("--epochs", type=int, default=12, help="trainer epochs, each model")
    parser.add_argument("--timeout", type=float, default=300.0, help="wait for `training`")
    parser.add_argument(
        "--pin", action="store_true", help="server on core 0; the rest and the trainer on core 1"
    )
    args = parser.parse_args()
    if args.pin and (os.cpu_count() or 1) < 2:
        raise SystemExit("--pin needs 2 cores")
    print(f"machine: {machine()}")
    tool = ensure_load_tool()
    ml = MovieLens.load(Settings())
    source = trained_ranker(Settings())
    cores = os.cpu_count() or 1
    with bench_stack() as base:
        settings = base.with_overrides(
            serving={"port": free_port(), "cache_ttl_s": 0.0, "workers": 1},
            analytics={"metrics_port": 0},
            trainer={"min_new_interactions": 1, "min_gap_s": 0},
        )
        publish_items(settings, ml.items)
        seed_popular(settings, ml)
        seed_candidates(settings, ml, ml.users, n=500)
        seed_user_features(settings, ml, ml.users)
        promote(settings, source)
        produce(settings, load_events(settings))
        store = redis.Redis.from_url(settings.redis_url)
        epochs = {
            "STREAMREC_TRAINER__RETRIEVER_EPOCHS": str(args.epochs),
            "STREAMREC_TRAINER__RANKER_EPOCHS": str(args.epochs),
            # A trained candidate must not replace the ranker being served mid-run.
            "STREAMREC_TRAINER__PROMOTE": "false",
        }
        if args.pin:
            epochs["STREAMREC_TRAINER__CPUS"] = "[1]"
        trainers = {
            "trainer (nice 10, 1 thread)": {},
            f"trainer unbounded (nice 0, {cores} threads)": {
                "STREAMREC_TRAINER__NICE": "0",
                "STREAMREC_TRAINER__THREADS": str(cores),
            },
        }
        windows: list[dict] = []
        with contextlib.ExitStack() as cleanup:
            server = ServeProcess(settings).start()
            cleanup.callback(server.stop)
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
            if args.pin:
                assert server.proc is not None
                pin_tree(server.proc.pid, {0})
                for pid in stack_pids(settings).values():
                    pin_tree(pid, {1})
                os.sched_setaffinity(0, {1})  # vegeta and the trainer inherit it

            def window(label: str, trainer: WorkerProcess | None = None) -> None:
                res = attack(server.url, ml.users, args.rate, args.window, workdir, tool)
                windows.append(row(label, res, trainer_state(store) if trainer else ""))
                print(json.dumps(windows[-1]), flush=True)

            attack(server.url, ml.users, args.rate, 5, workdir, tool)  # warm-up, not counted
            window("without")
            for label, env in trainers.items():
                store.delete(status_key(GROUP))
                extra_env = {**epochs, **env}
                with WorkerProcess(settings, NAME, group=GROUP, extra_env=extra_env) as trainer:
                    wait_for_training(trainer, store, args.timeout)
                    window(label, trainer)
                window("without")
    base_p99 = [w["p99_ms"] for w in windows if w["window"] == "without"]
    mean_base = sum(base_p99) / len(base_p99)
    for w in windows:
        w["p99_vs_without"] = round(w["p99_ms"] / mean_base, 2)
        if w["trainer_state_at_end"] not in ("", "training"):
            print(f"note: {w['window']}: the training ended inside the window; raise --epochs")
    print(
        "retrain-serving:",
        json.dumps(
            {"rate": args.rate, "window_s": args.window, "pin": args.pin, "windows": windows}
        ),
    )


if __name__ == "__main__":
    main()
