"""A local OpenAI-compatible provider for tests and the demo (`streamrec llm serve-local`).

Responsibilities:
- answer `POST /v1/chat/completions` deterministically (the same prompt gives the same text;
  a prompt asking for comma-separated genres gets genres), after a latency drawn from
  [latency_min_ms, latency_max_ms];
- enforce a sliding-window rate limit (`limit` requests per `window_s`) by answering 429
  with an integer `Retry-After`, as real providers do;
- a failure mode: `none`, `error` (500 to every call) or `hang` (never answers until the mode
  changes); with `api_key` set, a wrong or missing bearer token gets 401;
- keep a request log (time, status; never the Authorization header) that tests count, in
  memory (`GET /admin/log`) and optionally as JSONL (`local_log`);
- `POST /admin/config` changes limit, window, latency and failure mode at run time, so a
  test or benchmark can switch a running provider between healthy, 429 storm and hung.

`LocalProvider` runs it as a child process (demo, tests, benchmarks); `ProviderAdmin` is
the small HTTP client of the admin endpoints.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections import deque
from pathlib import Path
from typing import Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from streamrec.infra import processes
from streamrec.infra.processes import ChildProcess
from streamrec.infra.settings import Settings

Failure = Literal["none", "error", "hang"]
GENRES = (
    "Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


class ProviderConfig(BaseModel):
    """The provider's behaviour; every field can be changed at run time."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(500, ge=1)
    window_s: float = Field(60.0, gt=0)
    latency_min_ms: int = Field(200, ge=0)
    latency_max_ms: int = Field(2000, ge=0)
    failure: Failure = "none"


class ConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(None, ge=1)
    window_s: float | None = Field(None, gt=0)
    latency_min_ms: int | None = Field(None, ge=0)
    latency_max_ms: int | None = Field(None, ge=0)
    failure: Failure | None = None


class LogEntry(BaseModel):
    t: float = Field(description="wall-clock arrival time (s)")
    status: int


class _Message(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = None
    temperature: float | None = None


def answer_for(messages: list[_Message]) -> str:
    """The deterministic answer to a conversation."""
    prompt = "\n".join(m.content for m in messages)
    digest = hashlib.sha256(prompt.encode()).digest()
    if "comma-separated genres" in prompt:
        picks = sorted({GENRES[b % len(GENRES)] for b in digest[:2]})
        return ", ".join(picks)
    user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    subject = user.splitlines()[0][:80] if user else "this"
    tone = ("gripping", "warm", "witty", "haunting", "sweeping", "quiet")[digest[2] % 6]
    return f"A {tone} pick: {subject}."


def create_app(config: ProviderConfig, api_key: str = "", log_file: Path | None = None) -> FastAPI:
    app = FastAPI(title="StreamRec local LLM provider", docs_url=None, redoc_url=None)
    state = {"config": config, "unhang": asyncio.Event()}
    accepted: deque[float] = deque()  # monotonic times of calls let through, for the limit
    entries: list[LogEntry] = []
    rng = random.Random(42)  # latencies vary but repeat from one run to the next

    def record(status: int, arrived: float) -> None:
        entry = LogEntry(t=arrived, status=status)
        entries.append(entry)
        if log_file is not None:
            with open(log_file, "a") as f:
                f.write(entry.model_dump_json() + "\n")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        cfg: ProviderConfig = state["config"]
        arrived = time.time()
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            record(401, arrived)
            return JSONResponse({"error": {"message": "invalid API key"}}, status_code=401)
        now = time.monotonic()
        while accepted and accepted[0] <= now - cfg.window_s:
            accepted.popleft()
        if len(accepted) >= cfg.limit:
            record(429, arrived)
            # When enough of the window's calls will have aged out for one more to fit.
            oldest_blocking = accepted[len(accepted) - cfg.limit]
            retry_after = max(1, math.ceil(oldest_blocking + cfg.window_s - now))
            return JSONResponse(
                {"error": {"message": "rate limit exceeded", "type": "rate_limit"}},
                status_code=429,
                headers={"Retry-After": str(retry_after)},
            )
        accepted.append(now)
        try:
            body = ChatRequest.model_validate_json(await request.body())
        except ValueError as exc:
            record(400, arrived)
            return JSONResponse({"error": {"message": str(exc)[:500]}}, status_code=400)
        if cfg.failure == "hang":
            record(0, arrived)  # 0: arrived, never answered
            await state["unhang"].wait()
            return JSONResponse({"error": {"message": "was hung"}}, status_code=503)
        if cfg.failure == "error":
            record(500, arrived)
            return JSONResponse({"error": {"message": "injected failure"}}, status_code=500)
        lo, hi = cfg.latency_min_ms, max(cfg.latency_min_ms, cfg.latency_max_ms)
        await asyncio.sleep(rng.uniform(lo, hi) / 1000)
        record(200, arrived)
        return JSONResponse(
            {
                "id": "cmpl-" + hashlib.sha1(str(len(entries)).encode()).hexdigest()[:12],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer_for(body.messages)},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": [{"id": "local-echo", "object": "model"}]}

    @app.get("/admin/config")
    async def get_config() -> ProviderConfig:
        return state["config"]

    @app.post("/admin/config")
    async def set_config(update: ConfigUpdate) -> ProviderConfig:
        cfg = state["config"].model_copy(update=update.model_dump(exclude_none=True))
        state["config"] = cfg
        if cfg.failure != "hang":
            state["unhang"].set()  # release hung calls (their clients gave up long ago)
            state["unhang"] = asyncio.Event()
        # The window keeps its calls: a lowered quota applies at once, as a provider's would.
        return cfg

    @app.get("/admin/log")
    async def get_log(since: float = 0.0) -> list[LogEntry]:
        return [e for e in entries if e.t >= since]

    return app


def config_from(settings: Settings) -> ProviderConfig:
    s = settings.llm
    return ProviderConfig(
        limit=s.local_limit,
        window_s=s.local_window_s,
        latency_min_ms=s.local_latency_min_ms,
        latency_max_ms=s.local_latency_max_ms,
        failure=s.local_failure,
    )


def serve(settings: Settings, config: ProviderConfig | None = None) -> None:
    """Run the provider in the foreground until interrupted."""
    import uvicorn

    s = settings.llm
    app = create_app(
        config or config_from(settings),
        api_key=s.local_api_key.get_secret_value(),
        log_file=Path(s.local_log) if s.local_log else None,
    )
    uvicorn.run(
        app,
        host=s.local_host,
        port=s.local_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )


class ProviderAdmin:
    """Client of the admin endpoints of a running local provider."""

    def __init__(self, root_url: str) -> None:
        self.root = root_url.rstrip("/")

    def configure(self, **fields: object) -> ProviderConfig:
        r = httpx.post(f"{self.root}/admin/config", json=fields, timeout=5)
        r.raise_for_status()
        return ProviderConfig.model_validate(r.json())

    def log(self, since: float = 0.0) -> list[LogEntry]:
        r = httpx.get(f"{self.root}/admin/log", params={"since": since}, timeout=10)
        r.raise_for_status()
        return [LogEntry.model_validate(e) for e in r.json()]

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.root}/v1/models", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def max_in_window(times: list[float], window_s: float) -> int:
    """The largest number of `times` inside any window of `window_s` (two pointers)."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class LocalProvider(ChildProcess):
    """The provider as a child process (`streamrec llm serve-local`), for tests and the demo."""

    def __init__(self, settings: Settings) -> None:
        s = settings.llm
        super().__init__(
            "local LLM provider",
            log_file=settings.state_dir / "logs" / f"llm-provider-{s.local_port}.log",
            pid_file=settings.state_dir / f"llm-provider-{s.local_port}.pid",
            stop_timeout_s=5.0,
        )
        self.settings = settings
        self.root_url = f"http://{s.local_host}:{s.local_port}"
        self.base_url = f"{self.root_url}/v1"
        self.admin = ProviderAdmin(self.root_url)

    def start(self, timeout_s: float = 30.0) -> LocalProvider:
        s = self.settings.llm
        processes.ensure_ports_free(
            s.local_host, {"local LLM provider": s.local_port}, "STREAMREC_LLM__LOCAL_PORT"
        )
        self.launch(
            processes.streamrec_argv("llm", "serve-local"),
            env=self.settings.to_env(),
            ready=self.admin.answers,
            timeout_s=timeout_s,
        )
        return self

    def __enter__(self) -> LocalProvider:
        return self.start()
