"""Serving benchmark: the worker under an open-loop HTTP load, against the bare ranker.

    python -m benchmarks.serving_bench [--duration 10] [--device cpu|cuda] [--cache]
                                       [--pin] [--scale] [--workers N]

On a fresh stack of its own, with ML-100K loaded (catalog on catalog.items, trending lists,
500 candidates for each of the 943 users, their features in Feast, a ranker trained through
the models' training API and promoted), it measures in one run:
- bare ranker: requests/s the model sustains scoring 500 candidates per request, in batches
  of the serving batcher's size (the ranking-bound limit);
- the serving worker (`streamrec serve`, a subprocess; `--workers` processes, one per core by
  default) under an open-loop constant rate at several rates: p50/p95/p99 and the capacity,
  the highest rate with p99 < 50 ms, as a ratio to the bare rate;
- the worker's efficiency near capacity: the bare ranker's CPU per request over the worker's
  CPU (every thread) per answered request;
- the p99 at half the capacity, and at twice it the goodput (as a share of the capacity)
  and the p99 of admitted (200) requests;
- the request-topic round trip (a plain confluent-kafka client) p50/p99 at `--topic-rate`.
The response cache is off unless `--cache` (each request ranks its 500 candidates).

`--pin` is the fair measurement on a shared 2-core machine: one serving process on core 0;
the load generator, the broker and Redis on core 1; the bare ranker on one thread on core 0.
Unpinned is what a user of one small box sees. `--scale` also sweeps 1 process and
`--workers` processes unpinned and prints their capacity ratio.

The load generator is vegeta, built on first use with `go install`, or Debian's hey when Go
is missing (`benchmarks.load_tools`); the run says which. Each rate also reports the server's
CPU per request by thread (`/proc/PID/task`): the event loop (and its kernel share),
librdkafka's threads, the rest (the ranker, torch), and the CPU per request of the broker,
Redis and the load generator. For A/B runs: `--rps 100,150` fixed rates, `--no-bare` skips
the bare ranker, `--sweep-only` skips half rate, 2x and the request topic.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import resource
import shlex
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil

from benchmarks.common import bench_stack, machine, percentiles, thread_times
from benchmarks.load_tools import LoadTool, ensure_load_tool
from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.models.features import UserFeatures
from streamrec.scenarios.seed import MovieLens, seed_candidates, seed_popular, seed_user_features
from streamrec.serving.process import ServeProcess
from streamrec.streams.catalog import publish_items


def trained_ranker(settings: Settings) -> Path:
    from streamrec.models.train import train

    cache = settings.with_overrides(stack={"state_dir": settings.data.cache_dir / "test-ranker"})
    return train(cache, retriever_epochs=1, ranker_epochs=1).ranker.path


def promote(settings: Settings, source: Path) -> str:
    from streamrec.models.registry import ModelRegistry

    registry = ModelRegistry(settings)
    shutil.copytree(source, registry.kind_dir("ranker") / source.name)
    registry.promote("ranker", source.name)
    return source.name


def bare_ranker_rate(
    path: Path,
    device: str,
    ml: MovieLens,
    batch: int,
    seconds: float,
    history_len: int,
    compiled: bool = True,
    threads: int | None = None,
) -> tuple[float, float, float, float]:
    """Requests/s of RankerModel.score_batch alone on all cores: batched as serving does, and
    one by one; and the CPU milliseconds one batched request costs on all cores and on one
    torch thread (the serving worker's layout on 2 cores, `set_ranker_threads`). Each request
    carries the user's last `history_len` items, as serving gives the ranker."""
    import torch

    from streamrec.models.ranker import RankerModel
    from streamrec.scenarios.seed import candidate_list

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    # The model exactly as serving loads it (TorchScript unless serving.ranker_compiled is off).
    model = RankerModel.load(path, device=device, compiled=compiled)
    users = ml.users
    inputs = []
    for u in users[:256]:
        hist = [i for _, i, _ in ml.history[u]]
        inputs.append(
            (
                UserFeatures(user_id=u, recent_items=hist[-history_len:], n_interactions=len(hist)),
                [c.item_id for c in candidate_list(ml, u, 500).items],
            )
        )

    def run(size: int) -> tuple[float, float]:
        """(requests/s, CPU ms a request) scoring batches of `size` for `seconds`."""
        done, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            chunk = [inputs[(done + j) % len(inputs)] for j in range(size)]
            model.score_batch([c[0] for c in chunk], [c[1] for c in chunk])
            done += size
        return done / (time.perf_counter() - t0), (time.process_time() - c0) * 1000.0 / done

    run(batch)  # warm-up
    batched, batched_cpu_ms = run(batch)
    single, _ = run(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, one_thread_cpu_ms = run(batch)
    finally:
        torch.set_num_threads(threads)
    return batched, single, batched_cpu_ms, one_thread_cpu_ms


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its children so far."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def stack_pids(settings: Settings) -> dict[str, int]:
    """The benchmark stack's broker and Redis processes (found by their state dir and port)."""
    out: dict[str, int] = {}
    state, redis_port = str(settings.state_dir), f":{settings.stack.redis_port}"
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "java" in (proc.info["name"] or "") and state in cmd:
            out["broker"] = proc.pid
        elif "redis-server" in cmd and redis_port in cmd:
            out["redis"] = proc.pid
    return out


def others_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of the stack's processes and of this process's waited-for children
    (the load generator: vegeta or hey, run to completion by `attack`)."""
    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["load generator"] = children.ru_utime + children.ru_stime
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of every thread of a process and of its children, by
    thread kind: the event loops (each process's main thread), the rankers, librdkafka's
    threads, the rest; from /proc (Linux). With `serving.workers` > 1 the serving processes
    are the supervisor's children, and it is theirs that matter."""
    out: Counter[str] = Counter()
    try:
        procs = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return {}
    for proc in procs:
        for tid, comm, user, system in thread_times(proc):
            if tid == str(proc):
                kind = "loop"
                out["loop-kernel"] += system  # of which in the kernel
            elif comm.startswith("ranker"):
                kind = "ranker"
            elif comm.startswith("rdk:"):
                kind = "kafka"
            else:
                kind = "other"
            out[kind] += user + system
    return dict(out)


def attack(
    url: str,
    users: list[str],
    rate: int,
    seconds: float,
    workdir: Path,
    tool: LoadTool,
    pid: int | None = None,
    stack: dict[str, int] | None = None,
    headers: dict[str, str] | None = None,
) -> dict:
    """Open-loop constant-rate load; per-request latency (ms) and status; answers by level
    (read from each answer's body, so it holds for any number of worker processes); with the
    server's `pid`, the CPU time its processes spent per request; with the `stack`'s pids,
    theirs and the load generator's too (the same cores serve them all). `headers` go on
    every request (an API key: benchmarks/auth_bench.py's `--flood`)."""
    cpu0 = cpu_seconds(pid) if pid is not None else 0.0
    threads0 = thread_cpu(pid) if pid is not None else {}
    others0 = others_cpu(stack or {})
    targets = workdir / "targets.txt"
    rng = random.Random(rate)
    targets.write_text(
        "\n".join(f"GET {url}/v1/users/{rng.choice(users)}/recommendations" for _ in range(5000))
        + "\n"
    )
    header_args = [f"{k}: {v}" for k, v in (headers or {}).items()]
    if tool.name == "vegeta":
        vegeta = tool.path
        flags = "".join(f" -header {shlex.quote(h)}" for h in header_args)
        out = subprocess.run(
            f"{vegeta} attack -rate={rate}/s -duration={seconds}s -timeout=5s{flags} "
            f"-targets={targets} -workers=64 -max-workers=2000 | {vegeta} encode --to json",
            shell=True,
            capture_output=True,
            check=True,
        ).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        lat = [r["latency"] / 1e6 for r in rows]
        codes = [r["code"] for r in rows]
        by_level = Counter(
            json.loads(base64.b64decode(r["body"]))["level"] for r in rows if r["code"] == 200
        )
        tool = "vegeta"
    else:  # hey: -q is per worker, so rate = workers x q (closed loop per worker)
        workers = max(1, rate // 10)
        out = subprocess.run(
            [
                tool.path,
                "-z",
                f"{seconds}s",
                "-q",
                "10",
                "-c",
                str(workers),
                "-o",
                "csv",
                *(arg for h in header_args for arg in ("-H", h)),
                f"{url}/v1/users/{users[0]}/recommendations",
            ],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.splitlines()[1:]
        lat = [float(line.split(",")[0]) * 1000 for line in out if line]
        codes = [int(line.split(",")[6]) for line in out if line]
        by_level = Counter()  # hey does not keep bodies
        tool = "hey"
    ok = [latency for latency, c in zip(lat, codes, strict=True) if c == 200]
    cpu = cpu_seconds(pid) - cpu0 if pid is not None else float("nan")
    threads = thread_cpu(pid) if pid is not None else {}
    others = others_cpu(stack or {})
    return {
        "cpu_ms_per_request": cpu * 1000.0 / max(1, len(lat)),
        "others_cpu_ms": {
            k: (v - others0[k]) * 1000.0 / max(1, len(lat)) for k, v in others.items()
        },
        "thread_cpu_ms": {
            k: (v - threads0.get(k, 0.0)) * 1000.0 / max(1, len(lat)) for k, v in threads.items()
        },
        "levels": dict(by_level),
        "codes": dict(Counter(codes)),
        "tool": tool,
        "rate": rate,
        "sent": len(lat),
        "ok": len(ok),
        "shed": sum(1 for c in codes if c == 503),
        "errors": sum(1 for c in codes if c not in (200, 503)),
        "all": percentiles(lat) if lat else {},
        "admitted": percentiles(ok) if ok else {},
        "goodput": len(ok) / seconds,
    }


def topic_round_trip(settings: Settings, users: list[str], n: int, rate: float) -> dict:
    """Round trips of `n` requests on the request topic, started `rate` a second (the next
    one waits for the previous answer when that takes longer than 1/rate)."""
    from streamrec.serving.topic_client import RequestTopicClient

    client = RequestTopicClient(settings, "bench")
    try:
        client.ask_until_answered(users[0], 120)  # the server's group joins at 'latest'
        times, t0 = [], time.perf_counter()
        for i in range(n):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # pacing the load generator, not waiting on a race
            answer = client.ask(users[i % len(users)], 5.0)
            if answer is not None:
                times.append(answer[1])
    finally:
        client.close()
    return {**percentiles(times), "n": len(times), "rate": rate}


def pin_tree(pid: int, cores: set[int]) -> None:
    """Every thread of a process and of its children onto `cores` (a thread created later
    inherits its creator's mask; one made before keeps its own, hence each thread here)."""
    proc = psutil.Process(pid)
    for p in [proc, *proc.children(recursive=True)]:
        for tid in (t.id for t in p.threads()):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cores)


@contextlib.contextmanager
def affinity(cores: set[int]) -> Iterator[None]:
    """This process on `cores` meanwhile: what it starts inherits them (the worker, vegeta)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def line(res: dict, bare: float) -> str:
    a = res["all"]
    return (
        f"{res['tool']} {res['rate']:5d}/s ({res['rate'] / bare:.2f}x bare): p50 {a['p50']:.1f} "
        f"p95 {a['p95']:.1f} p99 {a['p99']:.1f} ms; ok {res['ok']}/{res['sent']}, "
        f"shed {res['shed']}, errors {res['errors']}; levels {res['levels']}; "
        f"server CPU {res['cpu_ms_per_request']:.2f} ms per request ("
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(res["thread_cpu_ms"].items()))
        + "); others "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(res["others_cpu_ms"].items()))
        + f" ms; load average {os.getloadavg()[0]:.1f}"
    )


def good(res: dict) -> bool:
    return res["all"]["p99"] < 50 and res["errors"] == 0 and res["shed"] == 0


def sweep(
    url: str,
    users: list[str],
    rates: list[int],
    seconds: float,
    workdir: Path,
    pid: int,
    stack: dict[str, int],
    bare: float,
    tool: LoadTool,
) -> list[dict]:
    out = []
    for rate in rates:
        res = attack(url, users, rate, seconds, workdir, tool, pid, stack)
        out.append(res)
        print(line(res, bare), flush=True)
    return out


def capacity(results: list[dict]) -> dict | None:
    """The highest rate answered in full with p99 < 50 ms."""
    return max((r for r in results if good(r)), key=lambda r: r["rate"], default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--cache", action="store_true", help="keep the response cache on")
    parser.add_argument("--rates", default="0.2,0.4,0.5,0.6,0.8,1.0", help="x bare rate")
    parser.add_argument(
        "--rps", default="", help="fixed rates in req/s instead of --rates (for A/B runs)"
    )
    parser.add_argument("--topic-requests", type=int, default=300)
    parser.add_argument("--topic-rate", type=float, default=100.0, help="request-topic req/s")
    parser.add_argument(
        "--no-bare", action="store_true", help="with --rps: skip the bare ranker (A/B runs)"
    )
    parser.add_argument(
        "--sweep-only", action="store_true", help="skip half rate, 2x and the request topic"
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="serving worker processes"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="one serving process on core 0; load generator, broker and Redis on core 1; "
        "the bare ranker on one thread on core 0",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also sweep with --workers processes and with 1, unpinned, and report the ratio",
    )
    args = parser.parse_args()
    if args.pin and (os.cpu_count() or 1) < 2:
        raise SystemExit("--pin needs 2 cores: one for the worker, one for the rest")
    tool = ensure_load_tool()
    workers = 1 if args.pin else args.workers
    worker_core, other_core = {0}, {1}

    ml = MovieLens.load(Settings())
    source = trained_ranker(Settings())
    with bench_stack() as base:
        settings = base.with_overrides(
            serving={
                "port": free_port(),
                "device": args.device,
                "cache_ttl_s": 2.0 if args.cache else 0.0,
                "workers": workers,
            },
            analytics={"metrics_port": 0},
        )
        publish_items(settings, ml.items)
        seed_popular(settings, ml)
        seed_candidates(settings, ml, ml.users, n=500)
        seed_user_features(settings, ml, ml.users)
        version = promote(settings, source)
        batch = settings.serving.batch_max_requests
        stack = stack_pids(settings)
        if args.pin:
            for pid in stack.values():
                pin_tree(pid, other_core)
        bare_args = (source, args.device, ml, batch, args.duration, settings.serving.history_len)
        if args.rps and args.no_bare:
            bare = single = bare_cpu_ms = one_thread_cpu_ms = float("nan")
        elif args.pin:
            with affinity(worker_core):
                bare, single, bare_cpu_ms, one_thread_cpu_ms = bare_ranker_rate(
                    *bare_args, settings.serving.ranker_compiled, threads=1
                )
        else:
            bare, single, bare_cpu_ms, one_thread_cpu_ms = bare_ranker_rate(
                *bare_args, settings.serving.ranker_compiled
            )
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        layout = (
            "pinned: worker on core 0, load generator + broker + Redis on core 1"
            if args.pin
            else f"unpinned, {workers} serving process(es)"
        )
        print(
            f"machine: {machine()}; load average {load}; device {args.device}; ranker {version}; "
            f"{layout}"
        )
        print(
            f"bare ranker{' (1 thread, core 0)' if args.pin else ''}: {bare:,.0f} req/s in "
            f"batches of {batch}, {single:,.0f} req/s one by one; {bare_cpu_ms:.2f} CPU ms per "
            f"request batched ({one_thread_cpu_ms:.2f} on one torch thread)"
        )

        if args.pin:
            with affinity(worker_core):
                server = ServeProcess(settings).start()
            pin_tree(server.proc.pid, worker_core)
            os.sched_setaffinity(0, other_core)  # vegeta and the topic client go here
        else:
            server = ServeProcess(settings).start()
        workdir = Path(tempfile.mkdtemp(prefix="serving-bench-"))
        url = server.url
        try:
            attack(url, ml.users, 50, 3, workdir, tool)  # warm-up
            fixed = [int(x) for x in args.rps.split(",") if x]
            rates = fixed or [max(10, int(bare * float(x))) for x in args.rates.split(",")]
            results = sweep(
                url, ml.users, rates, args.duration, workdir, server.proc.pid, stack, bare, tool
            )
            report(results, bare, bare_cpu_ms, one_thread_cpu_ms, args.pin)
            best = capacity(results)
            cap = best["rate"] if best else 0
            if args.sweep_only or not cap:
                return
            half = attack(url, ml.users, max(1, cap // 2), args.duration, workdir, tool)
            print(f"p99 at half the capacity ({cap // 2}/s): {half['all']['p99']:.1f} ms")
            over = attack(url, ml.users, cap * 2, args.duration, workdir, tool)
            print(
                f"2x capacity ({cap * 2}/s): goodput {over['goodput']:.0f}/s = "
                f"{over['goodput'] / cap:.2f} x capacity, admitted p99 "
                f"{over['admitted'].get('p99', float('nan')):.1f} ms, shed {over['shed']}, "
                f"errors {over['errors']} of {over['sent']}; levels {over['levels']}"
            )
            rt = topic_round_trip(settings, ml.users, args.topic_requests, args.topic_rate)
            print(
                f"request topic round trip ({rt['n']} requests at {rt['rate']:.0f}/s): "
                f"p50 {rt['p50']:.1f} p99 {rt['p99']:.1f} ms"
            )
        finally:
            server.stop()
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            shutil.rmtree(workdir, ignore_errors=True)
        if args.scale and not args.pin:
            scale(settings, ml, rates, args.duration, stack, bare, tool, cap, args.workers)


def report(
    results: list[dict], bare: float, bare_cpu_ms: float, one_thread_cpu_ms: float, pin: bool
) -> None:
    """Capacity, and the worker's efficiency at it: the bare ranker's CPU per request over
    the worker's (every thread) per answered request, near capacity; CPU per request is what
    a shared machine distorts least."""
    best = capacity(results)
    near = best or results[0]
    model_ms = one_thread_cpu_ms if pin else min(bare_cpu_ms, one_thread_cpu_ms)
    worker_ms = near["cpu_ms_per_request"] * near["sent"] / max(1, near["ok"])
    others = sum(near["others_cpu_ms"].values())
    cores = os.cpu_count() or 1
    print(
        f"worker efficiency at {near['rate']}/s: bare ranker {model_ms:.2f} CPU ms a request "
        f"/ worker {worker_ms:.2f} CPU ms an answer = {model_ms / worker_ms:.2f}; load "
        f"generator, broker and Redis beside it {others:.2f} ms"
    )
    if not pin:
        floor = model_ms + others
        print(
            f"bound for any worker here: a request path costing 0 CPU leaves {floor:.2f} ms a "
            f"request: ~{cores * 1000 / floor:,.0f} req/s = {cores * 1000 / floor / bare:.2f} "
            "x bare at 100% CPU"
        )
    cap = best["rate"] if best else 0
    print(f"capacity (highest rate with p99 < 50 ms): {cap}/s = {cap / bare:.2f} x bare ranker")


def scale(
    settings: Settings,
    ml: MovieLens,
    rates: list[int],
    seconds: float,
    stack: dict[str, int],
    bare: float,
    tool: LoadTool,
    first_cap: int,
    workers: int,
) -> None:
    """Capacity with `workers` processes against one process, unpinned, on the same stack."""
    caps = {}
    for n in sorted({1, workers}):
        if n == workers and first_cap:
            caps[n] = first_cap
            continue
        s = settings.with_overrides(serving={"workers": n, "port": free_port()})
        server = ServeProcess(s).start()
        workdir = Path(tempfile.mkdtemp(prefix="serving-bench-"))
        try:
            attack(server.url, ml.users, 50, 3, workdir, tool)
            print(f"-- {n} serving process(es):")
            res = sweep(
                server.url, ml.users, rates, seconds, workdir, server.proc.pid, stack, bare, tool
            )
            best = capacity(res)
            caps[n] = best["rate"] if best else 0
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{workers} processes / 1 process (unpinned, capacity at p99 < 50 ms): "
        f"{caps[workers]}/s / {caps[1]}/s = {caps[workers] / max(1, caps[1]):.2f}"
    )


if __name__ == "__main__":
    main()
