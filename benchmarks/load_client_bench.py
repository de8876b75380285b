"""The scenarios' load generator: client CPU per request, against httpx's AsyncClient.

    python -m benchmarks.load_client_bench [--requests 3000] [--rate 600]

A trivial ASGI app (one fixed JSON body, the size of a short answer) on uvicorn, pinned to
the last core; the clients, one after another in this process, pinned to the first. Each
sends `--requests` open-loop at `--rate` and reports its CPU per request (this process's
CPU time over the run) and how far behind its schedule it finished. Compared:
- `httpx`: one `httpx.AsyncClient` on asyncio, what `scenarios/load.py` used before;
- `OpenLoop`: `scenarios.load.OpenLoop` itself (aiohttp, orjson, on uvloop via `run_client`).
The server is not the subject: it only has to keep up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx

from benchmarks.common import machine
from streamrec.infra.processes import free_port
from streamrec.scenarios.load import OpenLoop, RetryPolicy, run_client
from streamrec.scenarios.workload import Request

BODY = (
    b'{"request_id":"r","user_id":"1","level":"FULL","model_version":"v","items":['
    + b",".join(
        b'{"item_id":"%d","score":0.5,"title":"A title (1995)","genres":["Drama"],'
        b'"explanation":"Because you watched another film"}' % i
        for i in range(10)
    )
    + b"]}"
)


async def app(scope, receive, send):  # type: ignore[no-untyped-def] - a bare ASGI app
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def schedule(n: int, rate: float) -> list[Request]:
    return [Request(t_s=i / rate, user_id=str(i % 100), session_id="s", seq=i) for i in range(n)]


async def httpx_loop(url: str, requests: list[Request]) -> None:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one(r: Request) -> None:
            got = await client.get(f"{url}/v1/users/{r.user_id}/recommendations", timeout=2)
            got.json()

        t0 = time.monotonic()
        tasks = []
        for r in requests:
            delay = t0 + r.t_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(r)))
        await asyncio.gather(*tasks, return_exceptions=True)


def measure(
    name: str, run: Callable[[], object], n: int, last_s: float
) -> tuple[str, float, float]:
    """(name, client CPU µs per request, seconds behind the schedule at the end)."""
    c0, t0 = time.process_time(), time.monotonic()
    run()
    cpu, wall = time.process_time() - c0, time.monotonic() - t0
    return name, cpu / n * 1e6, wall - last_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=600.0, help="requests per second")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "benchmarks.load_client_bench:app"]
    argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    server = subprocess.Popen(
        [*argv, "--loop", "uvloop", "--http", "httptools"],
        preexec_fn=lambda: os.sched_setaffinity(0, {cores[-1]}),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30.0
        while not _answers(url):  # uvicorn binding its port
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the trivial app did not start")
            time.sleep(0.1)
        os.sched_setaffinity(0, {cores[0]})
        requests = schedule(args.requests, args.rate)
        policy = RetryPolicy(retries=0, timeout_s=2.0)
        n = (len(requests), requests[-1].t_s)
        rows = [
            measure(
                "httpx AsyncClient (asyncio)", lambda: asyncio.run(httpx_loop(url, requests)), *n
            ),
            measure(
                "OpenLoop (aiohttp, uvloop)",
                lambda: run_client(OpenLoop(url, policy).run(requests)),
                *n,
            ),
        ]
    finally:
        server.terminate()
        server.wait(10)
    print(f"{machine()}; {args.requests} requests at {args.rate:g}/s, server on core {cores[-1]}")
    print(f"{'client':<30} {'CPU/request':>12} {'behind at end':>14}")
    for name, us, behind in rows:
        print(f"{name:<30} {us:>9.0f} µs {behind:>12.2f} s")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/users/1/recommendations", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
