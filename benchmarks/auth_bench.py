"""What authentication and rate limits cost the serving worker, and what a flooding key does.

    flock /tmp/streamrec-heavy.lock .venv/bin/python -m benchmarks.auth_bench

Three measurements, in one process, on a stack of the benchmark's own (its Redis holds the
shared buckets):
1. tokens: `Authenticator.principal` for an API key, for a JWT's first use (RS256, ES256:
   PyJWT's signature check) and for a repeat (the token cache), µs per call;
2. CPU per request of the HTTP edge, auth off against auth on (a service key, limits high
   enough that all pass, so every request runs the gate, the key lookup and the limiter
   with its Redis leases): N GETs driven straight through the real ASGI app (`create_app`,
   its fast path and front door) with a stand-in recommender that answers at once, so the
   difference is the auth and limit path alone. It is compared with the worker's CPU per
   answer measured by benchmarks/serving_bench.py (`WORKER_CPU_PER_ANSWER_MS`). The worst
   case, every request for a user never seen, runs with the first-use pass (the default) and
   without it (`auth.first_use_window_ms=0`: each new user's bucket asks Redis first);
3. a key at 10x its limit: key A limited to `--limit` req/s is driven at 10x that, key B at
   the same rate unlimited by it; A's share of 429s, and B's p99 through the app with and
   without A's flood (in-process: the same event loop serves both, as one worker would).

These in-process figures isolate the part auth adds. The same flood against the real worker:

    flock /tmp/streamrec-heavy.lock .venv/bin/python -m benchmarks.auth_bench --flood

`--flood` runs only this: `streamrec serve` with the promoted ranker on the seeded stack of
benchmarks/serving_bench.py, auth on, two service keys made by `streamrec keys create` (A
with `--rate L`, B with the default limit, driven under it); the worker pinned to core 0,
both vegeta clients, the broker and Redis to core 1. Each of `--rounds` rounds runs B alone,
B with A at its limit (1x L: what A may cost by right), B with A at 10x L; a last run of B
alone closes. Per run: B's p50/p99 and non-200s, A's 429 share and answered/s, the worker's
CPU (all of it, and its event loop's), each core's busy share (every process on it). The
summary compares each flood's B p99 with the B-alone runs around it. On a shared machine,
`--priority -10` (root) runs the worker, the stack and vegeta ahead of other work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from benchmarks.common import bench_stack, machine, percentiles
from streamrec.infra.settings import Settings
from streamrec.serving.answer import Answer
from streamrec.serving.app import create_app
from streamrec.serving.auth import Authenticator, KeyRing, key_hash, new_key
from streamrec.serving.worker import ServingWorker
from streamrec.topics import ApiKeyRecord

# BENCHMARKS.md, "Batch-first worker, pinned", quiet re-run: 400 req/s, all worker threads
WORKER_CPU_PER_ANSWER_MS = 2.42


class Recommender:
    admission = None

    async def recommend(self, query: Any) -> Answer:
        return Answer(
            query.request_id, query.user_id, ["1"], [1.0], [None], "FULL", None, 0.0, _NOW
        )


_NOW = datetime.now(UTC)


def per_call_us(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def tokens(tmp: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    ring = KeyRing()
    key_id, key = new_key()
    ring.apply(ApiKeyRecord(key_id=key_id, key_hash=key_hash(key), scope="service"))
    for alg, private in (
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(private.public_key()))
        jwk.update(kid="k1", alg=alg)
        path = tmp / f"jwks-{alg}.json"
        path.write_text(json.dumps({"keys": [jwk]}))
        cfg = Settings().auth.model_copy(update={"jwks_file": str(path)})
        auth = Authenticator(cfg, ring)
        toks = [
            jwt.encode(
                {"sub": f"u{i}", "exp": int(time.time()) + 3600},
                private,
                alg,
                headers={"kid": "k1"},
            )
            for i in range(300)
        ]
        t0 = time.perf_counter()
        for t in toks:
            auth.principal(t)
        out[f"{alg} first use"] = (time.perf_counter() - t0) / len(toks) * 1e6
        headers = [(b"authorization", f"Bearer {toks[0]}".encode())]
        out[f"{alg} repeat (cache)"] = per_call_us(
            lambda a=auth, h=headers: a.authenticate(h), 200_000
        )
    auth = Authenticator(Settings().auth, ring)
    headers = [(b"authorization", f"Bearer {key}".encode())]
    out["API key"] = per_call_us(lambda: auth.authenticate(headers), 200_000)
    return out


async def drive(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"k=20",
        "headers": headers,
        "scheme": "http",
        "server": ("127.0.0.1", 18000),
        "client": ("127.0.0.1", 5555),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    await app(scope, receive, send)
    return status


def make_app(settings: Settings, records: list[ApiKeyRecord]) -> Any:
    worker = ServingWorker(settings)
    worker.recommender = Recommender()  # type: ignore[assignment]
    app = create_app(settings, worker)
    for r in records:
        app.state.keys.apply(r)
    return app


async def cpu_per_request(
    settings: Settings, n: int, users: int, concurrency: int
) -> dict[str, float]:
    key_id, key = new_key()
    record = ApiKeyRecord(key_id=key_id, key_hash=key_hash(key), scope="service")
    out = {}
    high = {"key_rate_per_s": 1e6, "key_burst": 1e6, "user_rate_per_s": 1e4, "user_burst": 1e4}
    # "on": limits high enough that every request passes with big leases; "on, default
    # limits": the per-user bucket's burst of 20 gives leases of one token, and every request
    # is for a new user: its first use passes and is taken from Redis with the others of its
    # window; without the first-use pass each one pays a Redis call before it passes.
    default = {"mode": "on", "key_rate_per_s": 1e6, "key_burst": 1e6}
    for mode, auth in (
        ("off", {"mode": "off"}),
        ("on", {"mode": "on", **high}),
        ("on, default limits", default),
        ("on, default limits, no first-use pass", {**default, "first_use_window_ms": 0}),
    ):
        s = settings.with_overrides(auth=auth)
        app = make_app(s, [record])
        headers = [(b"authorization", f"Bearer {key}".encode())] if mode != "off" else []
        # With the default limits every request asks for a user of its own (each user's
        # bucket allows 20 then 10/s): the worst case, one Redis lease per request.
        fresh = mode.startswith("on, default limits")
        for i in range(2000):  # warm-up
            await drive(app, f"/v1/users/w{i}/recommendations", headers)
        best = float("inf")
        for run in range(3):
            c0 = time.process_time()
            for start in range(0, n, concurrency):  # `concurrency` requests at once
                paths = [
                    f"/v1/users/{f'r{run}-{i}' if fresh else i % users}/recommendations"
                    for i in range(start, min(n, start + concurrency))
                ]
                codes = await asyncio.gather(*(drive(app, p, headers) for p in paths))
                assert set(codes) == {200}, codes
            if app.state.limits is not None:  # the first uses' Redis calls count too
                await app.state.limits.limiter.drain()
            best = min(best, (time.process_time() - c0) / n * 1e6)
        out[mode] = best
        limits = app.state.limits
        if limits is not None:
            out[f"{mode}: Redis calls per request"] = limits.limiter.redis_calls / (2000 + 3 * n)
            await limits.aclose()
    return out


async def flood(settings: Settings, limit: float, seconds: float) -> dict[str, Any]:
    """Key A at 10x `limit` req/s, key B at `limit` req/s (its own limit well above)."""
    a_id, a_key = new_key()
    b_id, b_key = new_key()
    records = [
        ApiKeyRecord(key_id=a_id, key_hash=key_hash(a_key), scope="service", rate_per_s=limit),
        ApiKeyRecord(key_id=b_id, key_hash=key_hash(b_key), scope="service"),
    ]
    s = settings.with_overrides(auth={"mode": "on", "user_rate_per_s": 0})
    out: dict[str, Any] = {}
    for run in ("warm-up (not reported)", "B alone", "B with A at 10x", "B alone again"):
        app = make_app(s, records)
        b_lat: list[float] = []
        a_codes: list[int] = []

        async def client(
            key: str, rate: float, sink: list[Any], latency: bool, app: Any = app
        ) -> None:
            headers = [(b"authorization", f"Bearer {key}".encode())]
            t0 = time.perf_counter()
            i = 0
            while (now := time.perf_counter()) - t0 < seconds:
                due = t0 + i / rate
                if due > now:
                    await asyncio.sleep(due - now)
                start = time.perf_counter()
                code = await drive(app, f"/v1/users/{i % 500}/recommendations", headers)
                sink.append((time.perf_counter() - start) * 1000 if latency else code)
                i += 1

        tasks = [client(b_key, limit, b_lat, True)]
        if "with A" in run:
            tasks.append(client(a_key, 10 * limit, a_codes, False))
        await asyncio.gather(*tasks)
        p = percentiles(b_lat)
        out[run] = {"B requests": len(b_lat), "B p50 ms": p["p50"], "B p99 ms": p["p99"]}
        if a_codes:
            out[run]["A requests"] = len(a_codes)
            out[run]["A 429 share"] = sum(c == 429 for c in a_codes) / len(a_codes)
            out[run]["A 200/s"] = sum(c == 200 for c in a_codes) / seconds
        await app.state.limits.aclose()
    return out


def revocation(settings: Settings, rounds: int) -> list[float]:
    """Seconds from `publish` of a revocation returning to both of two followers (two
    processes' worth of consumers of auth.keys) refusing the key."""
    from streamrec.serving.key_store import KeyFollower, publish

    on = settings.with_overrides(auth={"mode": "on"})
    rings = [KeyRing(), KeyRing()]
    followers = [KeyFollower(on, ring) for ring in rings]
    for f in followers:
        f.start()
    auths = [Authenticator(on.auth, ring) for ring in rings]

    def knows(auth: Authenticator, key: str) -> bool:
        try:
            auth.principal(key)
            return True
        except Exception:
            return False

    delays = []
    try:
        for f in followers:
            f.loaded.wait(30)
        for _ in range(rounds):
            key_id, key = new_key()
            record = ApiKeyRecord(key_id=key_id, key_hash=key_hash(key), scope="service")
            publish(on, record)
            while not all(knows(a, key) for a in auths):
                time.sleep(0.001)
            publish(on, record.revoke())
            t0 = time.perf_counter()
            while any(knows(a, key) for a in auths):
                time.sleep(0.001)
            delays.append(time.perf_counter() - t0)
    finally:
        for f in followers:
            f.stop()
    return delays


def renice_tree(pid: int, nice: int) -> None:
    """Every thread of a process and of its children to `nice` (Linux: a thread's own value,
    inherited by the threads and processes it starts later)."""
    import contextlib

    import psutil

    if not nice:
        return
    proc = psutil.Process(pid)
    for p in [proc, *proc.children(recursive=True)]:
        for tid in (t.id for t in p.threads()):
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, nice)


def core_busy(since: dict[str, tuple[int, int]] | None = None) -> Any:
    """Without `since`: each core's (busy, total) jiffies so far, from /proc/stat. With it:
    each core's busy share since then (every process on it, not only ours)."""
    stat = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(x) for x in fields]
            idle = values[3] + values[4]  # idle + iowait
            stat[name] = (sum(values) - idle, sum(values))
    if since is None:
        return stat
    return [
        (busy - since[c][0]) / max(1, total - since[c][1])
        for c, (busy, total) in sorted(stat.items())
    ]


def create_key(settings: Settings, name: str, rate: float | None) -> str:
    """A service key made by `streamrec keys create` (the key is its stdout's last line)."""
    import subprocess

    from streamrec.infra.processes import child_env, streamrec_argv

    extra = ["--rate", f"{rate:g}"] if rate is not None else []
    done = subprocess.run(
        streamrec_argv("keys", "create", "--scope", "service", "--name", name, *extra),
        env=child_env(settings.to_env()),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def wait_for_key(url: str, key: str, timeout_s: float = 60.0) -> None:
    """Until the worker's auth.keys follower knows `key` (its first answer that is not 401)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{url}/v1/users/1/recommendations",
            headers={"authorization": f"Bearer {key}"},
            timeout=10,
        )
        if r.status_code != 401:
            return
        time.sleep(0.2)  # polling the follower's catch-up, bounded by the deadline
    raise SystemExit(f"the worker did not learn the key within {timeout_s:.0f} s")


def flood_worker(args: argparse.Namespace) -> None:
    """Key A at 10x its limit against the real worker, B's latency beside it (`--flood`)."""
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks.load_tools import ensure_load_tool
    from benchmarks.serving_bench import (
        affinity,
        attack,
        cpu_seconds,
        pin_tree,
        promote,
        stack_pids,
        thread_cpu,
        trained_ranker,
    )
    from streamrec.infra.processes import free_port
    from streamrec.scenarios.seed import (
        MovieLens,
        seed_candidates,
        seed_popular,
        seed_user_features,
    )
    from streamrec.serving.process import ServeProcess
    from streamrec.streams.catalog import publish_items

    if (os.cpu_count() or 1) < 2:
        raise SystemExit("--flood pins the worker and the load apart: it needs 2 cores")
    limit, b_rate, seconds = int(args.limit), int(args.b_rate), args.seconds
    tool = ensure_load_tool()
    ml = MovieLens.load(Settings())
    source = trained_ranker(Settings())
    worker_core, other_core = {0}, {1}
    with bench_stack() as base:
        settings = base.with_overrides(
            serving={"port": free_port(), "workers": 1, "cache_ttl_s": 0.0},
            analytics={"metrics_port": 0},
            # A key's own rate comes with a burst of twice it (`Limits.http`); B keeps the
            # defaults (auth.key_rate_per_s, auth.key_burst).
            auth={"mode": "on"},
        )
        publish_items(settings, ml.items)  # the stack benchmarks/serving_bench.py seeds
        seed_popular(settings, ml)
        seed_candidates(settings, ml, ml.users, n=500)
        seed_user_features(settings, ml, ml.users)
        version = promote(settings, source)
        a_key = create_key(settings, "flood-a", float(limit))
        b_key = create_key(settings, "steady-b", None)
        for pid in stack_pids(settings).values():
            pin_tree(pid, other_core)
            renice_tree(pid, args.priority)
        with affinity(worker_core):
            server = ServeProcess(settings).start()
        pin_tree(server.proc.pid, worker_core)
        renice_tree(server.proc.pid, args.priority)
        os.sched_setaffinity(0, other_core)  # both vegeta clients run here
        renice_tree(os.getpid(), args.priority)  # and inherit this
        print(
            f"machine: {machine()}; ranker {version}; worker on core 0, vegeta x2 + broker + "
            f"Redis on core 1; {tool.name}; key A limited to {limit}/s (burst {2 * limit}), key "
            f"B at {b_rate}/s under its {settings.auth.key_rate_per_s:g}/s; {seconds:g} s a run; "
            f"nice {args.priority}"
        )
        dirs = [Path(tempfile.mkdtemp(prefix="auth-flood-")) for _ in range(2)]
        b_headers = {"Authorization": f"Bearer {b_key}"}
        a_headers = {"Authorization": f"Bearer {a_key}"}
        pid = server.proc.pid
        runs: list[tuple[str, dict[str, Any]]] = []
        try:
            wait_for_key(server.url, a_key)
            wait_for_key(server.url, b_key)
            # Warm-up: the ranker's first batches and the loop's caches cost more.
            attack(server.url, ml.users, 2 * b_rate, 10, dirs[0], tool, headers=b_headers)
            plan = [
                ("B alone", 0),
                ("B + A at its limit", limit),
                ("B + A at 10x", 10 * limit),
            ] * args.rounds + [("B alone", 0)]
            with ThreadPoolExecutor(2) as pool:
                for name, a_rate in plan:
                    time.sleep(2.0)  # A's bucket refills (burst / limit s) before each run
                    cpu0, threads0, cores0 = cpu_seconds(pid), thread_cpu(pid), core_busy()
                    b_run = pool.submit(
                        attack,
                        server.url,
                        ml.users,
                        b_rate,
                        seconds,
                        dirs[0],
                        tool,
                        headers=b_headers,
                    )
                    a = (
                        attack(
                            server.url, ml.users, a_rate, seconds, dirs[1], tool, headers=a_headers
                        )
                        if a_rate
                        else None
                    )
                    b = b_run.result()
                    cpu = cpu_seconds(pid) - cpu0
                    row = flood_row(b, a, cpu, seconds)
                    threads = thread_cpu(pid)
                    row["worker loop CPU s"] = threads.get("loop", 0.0) - threads0.get("loop", 0.0)
                    row["core busy share"] = [round(x, 2) for x in core_busy(cores0)]
                    runs.append((name, row))
                    print(
                        name,
                        {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
                        flush=True,
                    )
        finally:
            server.stop()
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
    flood_summary(runs)


def flood_row(b: dict[str, Any], a: dict[str, Any] | None, cpu_s: float, seconds: float) -> dict:
    """One run's figures: B's latency and refusals, A's 429s, the worker's CPU."""
    sent = b["sent"] + (a["sent"] if a else 0)
    answered = b["ok"] + (a["ok"] if a else 0)
    row: dict[str, Any] = {
        "B p50 ms": b["all"]["p50"],
        "B p99 ms": b["all"]["p99"],
        "B sent": b["sent"],
        "B not 200": {c: n for c, n in b["codes"].items() if c != 200},
        "worker CPU ms a request": cpu_s * 1000 / max(1, sent),
        "worker CPU ms an answer": cpu_s * 1000 / max(1, answered),
        "worker CPU s": cpu_s,
        "worker CPU share of core 0": cpu_s / seconds,
        "load average": os.getloadavg()[0],
    }
    if a:
        row.update(
            {
                "A sent": a["sent"],
                "A 429s": a["codes"].get(429, 0),
                "A 429 share": a["codes"].get(429, 0) / max(1, a["sent"]),
                "A answered/s": a["ok"] / seconds,
            }
        )
    return row


def flood_summary(runs: list[tuple[str, dict[str, Any]]]) -> None:
    """B's p99 under each flood against the mean of the B-alone runs just before and after."""
    alone = [i for i, (name, _) in enumerate(runs) if name == "B alone"]
    alone_p99 = [runs[i][1]["B p99 ms"] for i in alone]
    spread = (max(alone_p99) - min(alone_p99)) / min(alone_p99) * 100
    print(
        f"B alone p99 over {len(alone)} runs: "
        + ", ".join(f"{p:.2f}" for p in alone_p99)
        + f" ms (spread {spread:.0f}% of the lowest)"
    )
    for before, after in pairwise(alone):
        base = (runs[before][1]["B p99 ms"] + runs[after][1]["B p99 ms"]) / 2
        for name, row in runs[before + 1 : after]:
            move = (row["B p99 ms"] - base) / base * 100
            print(
                f"  {name}: B p99 {row['B p99 ms']:.2f} ms vs {base:.2f} ms alone around it: "
                f"{move:+.1f}% ({'within' if abs(move) <= 10 else 'outside'} 10%)"
            )
        named = dict(runs[before + 1 : after])
        if {"B + A at its limit", "B + A at 10x"} <= named.keys():
            one, ten = named["B + A at its limit"], named["B + A at 10x"]
            extra = ten["A 429s"] - one["A 429s"]
            cpu_ms = (ten["worker CPU s"] - one["worker CPU s"]) * 1000 / max(1, extra)
            loop_ms = (ten["worker loop CPU s"] - one["worker loop CPU s"]) * 1000 / max(1, extra)
            print(
                f"  worker CPU per extra refused request (10x vs at its limit): {cpu_ms:.3f} ms, "
                f"of its event loop {loop_ms:.3f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument(
        "--concurrency", type=int, default=1, help="requests driven at once (a batch's worth)"
    )
    parser.add_argument("--limit", type=float, default=50.0, help="key A's limit, req/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--flood", action="store_true", help="only: key A at 10x --limit against the real worker"
    )
    parser.add_argument("--b-rate", type=float, default=50.0, help="--flood: key B's req/s")
    parser.add_argument("--rounds", type=int, default=3, help="--flood: rounds of runs")
    parser.add_argument(
        "--priority",
        type=int,
        default=0,
        help="--flood: nice value of the worker, the stack and vegeta (negative needs root): "
        "keeps other work on a shared machine from taking the measured cores",
    )
    args = parser.parse_args()
    if args.flood:
        flood_worker(args)
        return
    print(machine())
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        for name, us in tokens(Path(tmp)).items():
            print(f"credential {name}: {us:.1f} µs")
    with bench_stack() as settings:
        cpu = asyncio.run(cpu_per_request(settings, args.requests, args.users, args.concurrency))
        print(
            f"CPU per request through the ASGI app, {args.concurrency} at once, auth off: "
            f"{cpu['off']:.1f} µs"
        )
        for mode in ("on", "on, default limits", "on, default limits, no first-use pass"):
            extra = cpu[mode] - cpu["off"]
            print(
                f"  auth {mode}: {cpu[mode]:.1f} µs: +{extra:.1f} µs = "
                f"{extra / (WORKER_CPU_PER_ANSWER_MS * 1000) * 100:.2f}% of the worker's "
                f"{WORKER_CPU_PER_ANSWER_MS} ms per answer; Redis calls per request "
                f"{cpu[f'{mode}: Redis calls per request']:.3f}"
            )
        delays = revocation(settings, 20)
        p = percentiles(delays)
        print(
            f"revocation to both followers refusing (after publish returned), 20 keys: "
            f"p50 {p['p50'] * 1000:.0f} ms, max {p['max'] * 1000:.0f} ms"
        )
        result = asyncio.run(flood(settings, args.limit, args.seconds))
        result.pop("warm-up (not reported)")
        for run, figures in result.items():
            print(run, {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})
        alone, flooded = result["B alone"]["B p99 ms"], result["B with A at 10x"]["B p99 ms"]
        print(
            f"B's p99 moved {(flooded - alone) / alone * 100:+.1f}% "
            f"({alone:.3f} -> {flooded:.3f} ms)"
        )


if __name__ == "__main__":
    main()
