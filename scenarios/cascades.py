"""The cascade scenarios `streamrec scenario run NAME` knows, each run in two modes.

`naive` is StreamRec with the protection the scenario is about switched off through
settings (fields documented as for comparison only); `streamrec` is the defaults. Both modes
see the same seeded audience (`scenarios.workload`) and the same offered load.

- `llm-rate-limit`: the LLM allows 100 calls/min while the evening peak asks for far more.
  Naive: each answer waits for an LLM explanation (`serving.explain_llm_inline`). StreamRec:
  cached LLM text or a template on the path; the enricher spends the quota off the path.
- `retry-storm`: 2x the worker's capacity, clients retrying at once, up to 3 times. Naive: no
  admission (`serving.admission` false): nothing shed, no Retry-After, and clients retry
  without a budget. StreamRec: admission sheds with 503 + Retry-After + do-not-retry, and
  clients honour it within a retry budget.
"""

from __future__ import annotations

from streamrec.scenarios.load import RetryPolicy
from streamrec.scenarios.runner import Scenario
from streamrec.scenarios.workload import WorkloadConfig


def _evening(duration_s: float, seed: int) -> WorkloadConfig:
    # 16:00 to 24:00 over the run: the 20:00 peak (3x) falls in its middle.
    return WorkloadConfig(seed=seed, day_s=3.0 * duration_s, start_hour=16.0, sessions_per_s=2.0)


def _flat(duration_s: float, seed: int) -> WorkloadConfig:
    # A steady overload: the curve flat, so the offered rate is the scenario's all along.
    return WorkloadConfig(seed=seed, peak_factor=1.0, day_s=duration_s, sessions_per_s=2.0)


LLM_RATE_LIMIT = Scenario(
    name="llm-rate-limit",
    title="LLM rate limit at the evening peak",
    description=(
        "The local LLM provider (streamrec llm serve-local) allows 100 calls a minute and "
        "answers in 0.2-2 s. At the evening peak the naive worker asks it for the top item's "
        "explanation on every answer and waits; StreamRec answers with cached or template "
        "explanations and lets the enricher spend the quota off the request path."
    ),
    metric="p99_ms",
    better="lower",
    common={
        "llm": {
            "local_limit": 100,
            "local_window_s": 60.0,
            "requests_per_minute": 100,
            "request_missing": False,  # the quota goes to explanations, not descriptions
        },
    },
    settings={"naive": {"serving": {"explain_llm_inline": True}}, "streamrec": {}},
    clients={
        "naive": RetryPolicy(retries=0, timeout_s=2.0),
        "streamrec": RetryPolicy(retries=0, timeout_s=2.0),
    },
    workload=_evening,
    llm_provider=True,
    enricher={"streamrec": True},
)

RETRY_STORM = Scenario(
    name="retry-storm",
    title="Retry storm at twice the capacity",
    description=(
        "Clients retry a failed or slow (over 1 s) request at once, up to 3 times, while the "
        "offered load is twice what the worker answers at saturation. Naive: no admission "
        "control, so nothing is shed and no Retry-After is sent, and the clients keep no "
        "retry budget. StreamRec: admission sheds early with 503 + Retry-After + "
        "do-not-retry, and the clients honour it within a retry budget of 10%."
    ),
    metric="answered",
    better="higher",
    settings={"naive": {"serving": {"admission": False}}, "streamrec": {}},
    clients={
        "naive": RetryPolicy(retries=3, timeout_s=1.0, honour_overload=False, budget_ratio=None),
        "streamrec": RetryPolicy(retries=3, timeout_s=1.0, honour_overload=True, budget_ratio=0.1),
    },
    workload=_flat,
    rate=lambda capacity: 2.0 * capacity,
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (LLM_RATE_LIMIT, RETRY_STORM)}
