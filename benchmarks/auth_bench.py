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

The full load benchmark (vegeta against `streamrec serve` with the ranker) is not run here;
these in-process figures isolate the part auth adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument(
        "--concurrency", type=int, default=1, help="requests driven at once (a batch's worth)"
    )
    parser.add_argument("--limit", type=float, default=50.0, help="key A's limit, req/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
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
