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
- `redis-failover`: the stack's redis-server stopped (SIGSTOP) for a quarter of the run (at
  most 15 s) around the evening peak, then resumed. Naive: no fallback chain
  (`serving.fallback` false): a failed read is answered with a 500. StreamRec: breakers open,
  answers come at a lower level (POPULAR from memory), and FULL again after recovery.
- `invalidation-storm`: a popular new item, then a model promotion, under a steady load on a
  response cache in front of the candidates (`scenarios.storm`). Naive: broadcast deletes
  (`invalidation.mode` broadcast). StreamRec: coalesced, paced refresh-ahead.
- `evening-peak`: a compressed day whose 3x evening peak reaches twice the worker's capacity.
  Naive: no admission (`serving.admission` false). StreamRec: admission sheds the excess.
- `week`: seven compressed days of the synthetic audience, for the A/B report and catalog
  coverage from the users' own clicks. StreamRec mode only (nothing is switched off). The
  A/B is exploration's: the treatment's answers give their last 3 of 10 slots to the live
  items shown least (`serving.explore_slots`, ADR 0126), the control's none.
"""

from __future__ import annotations

import numpy as np

from streamrec.scenarios.faults import Outage
from streamrec.scenarios.figures import outage_figures, week_figures
from streamrec.scenarios.load import RetryPolicy
from streamrec.scenarios.runner import Scenario
from streamrec.scenarios.storm import STORM_SETTINGS, run_storm
from streamrec.scenarios.workload import WorkloadConfig, daily_multiplier


def _evening(duration_s: float, seed: int) -> WorkloadConfig:
    # 16:00 to 24:00 over the run: the 20:00 peak (3x) falls in its middle.
    return WorkloadConfig(seed=seed, day_s=3.0 * duration_s, start_hour=16.0, sessions_per_s=2.0)


def _flat(duration_s: float, seed: int) -> WorkloadConfig:
    # A steady overload: the curve flat, so the offered rate is the scenario's all along.
    return WorkloadConfig(seed=seed, peak_factor=1.0, day_s=duration_s, sessions_per_s=2.0)


# The overload scenarios' worker, in both modes: every request is ranked (no response
# cache), one request per batch and one batch at a time. The default worker, cache and
# batches on, answered ~2,000/s on 2 cores: twice that, and the naive clients' retries on
# top, is more than a load generator sharing those cores can send, and the run then
# measures the client. This worker's capacity (~600/s) it can pass.
OVERLOADABLE: dict[str, dict[str, object]] = {
    "serving": {"cache_ttl_s": 0.0, "batch_max_requests": 1, "batch_running": 1}
}

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
    common=OVERLOADABLE,
    rate=lambda capacity: 2.0 * capacity,
)

REDIS_FAILOVER = Scenario(
    name="redis-failover",
    title="The online store fails at the evening peak",
    description=(
        "The stack's redis-server (features, candidates, trending, caches) is stopped with "
        "SIGSTOP for a quarter of the run, at most 15 s, around the evening peak, and then "
        "resumed: every read runs into its timeout, as while a failed primary's replica is "
        "promoted. Naive: no fallback chain, so a failed read is answered with a 500. "
        "StreamRec: the breakers open, answers come at a lower level (the trending list "
        "held in memory), and FULL again once Redis answers."
    ),
    metric="error_rate",
    better="lower",
    settings={"naive": {"serving": {"fallback": False}}, "streamrec": {}},
    clients={
        "naive": RetryPolicy(retries=0, timeout_s=2.0),
        "streamrec": RetryPolicy(retries=0, timeout_s=2.0),
    },
    workload=_evening,
    outage=Outage(at=0.4, share=0.25, max_s=15.0),
    figures=outage_figures,
)

# A whole day, 08:00 to 08:00: the 20:00 peak falls in the middle of the run.
_DAY_START_H = 8.0
_DAY_MEAN = float(
    np.mean([daily_multiplier(t, 1.0, _DAY_START_H, 3.0) for t in np.linspace(0, 1, 400)])
)


def _day(duration_s: float, seed: int) -> WorkloadConfig:
    return WorkloadConfig(seed=seed, day_s=duration_s, start_hour=_DAY_START_H, sessions_per_s=2.0)


EVENING_PEAK = Scenario(
    name="evening-peak",
    title="A compressed day and its 3x evening peak",
    description=(
        "One day compressed into the run: the daytime load is two thirds of what the worker "
        "answers at saturation, and the evening peak (3x, at 20:00) twice that; the response "
        "cache is off and requests are ranked one at a time in both modes. Naive: no "
        "admission control, so the peak queues in the worker and the clients' 1 s timeouts "
        "run out. StreamRec: admission sheds the excess with 503 + Retry-After and answers "
        "the rest within the budget."
    ),
    metric="p99_ms",
    better="lower",
    common=OVERLOADABLE,
    settings={"naive": {"serving": {"admission": False}}, "streamrec": {}},
    clients={
        "naive": RetryPolicy(retries=0, timeout_s=1.0),
        "streamrec": RetryPolicy(retries=0, timeout_s=1.0),
    },
    workload=_day,
    # The daytime rate at 2/3 of capacity: the mean over the day is that times the curve's.
    rate=lambda capacity: capacity * 2.0 / 3.0 * _DAY_MEAN,
)


def _week(duration_s: float, seed: int) -> WorkloadConfig:
    day_s = duration_s / 7.0
    return WorkloadConfig(
        seed=seed,
        users=943,  # every ML-100K user: coverage needs the whole audience
        day_s=day_s,
        start_hour=0.0,
        sessions_per_s=3.0,
        uploads_every_s=day_s / 2.0,  # two uploads a day
        viral_at_s=3.0 * day_s + 20.0 / 24.0 * day_s,  # Thursday evening
    )


# Exploration's slots in the treatment's answers (k=10). Coverage needs about one slot per
# live item (1,696 with the week's uploads): a week of 140 s asks ~2,400 times, ~1,100 of
# them from treatment users, so 3 slots give ~3,400 explored slots, room for the answers
# the response cache repeats (ADR 0126).
WEEK_EXPLORE_SLOTS = 3

WEEK = Scenario(
    name="week",
    title="A simulated week: exploration's A/B and catalog coverage from users' clicks",
    description=(
        "Seven compressed days of the synthetic audience (all 943 ML-100K users, each "
        "day's evening peak, two uploads a day, a viral item on Thursday evening). Every "
        "answer is shown to its user, whose clicks go to events.interactions. The A/B test "
        f"is exploration: treatment users' answers give their last {WEEK_EXPLORE_SLOTS} "
        "slots to the live catalog items the worker has shown least, control users' answers "
        "are ranked only. The figures are the analytics report's: CTR per A/B variant with "
        "a 95% Wilson interval, and the share of live catalog items served at least once "
        "over the week (goal 95%, reached from a week of about 140 s)."
    ),
    metric="coverage",
    better="higher",
    common={"serving": {"explore_slots": WEEK_EXPLORE_SLOTS, "explore_variants": "treatment"}},
    settings={"naive": {}, "streamrec": {}},
    clients={"naive": RetryPolicy(retries=0), "streamrec": RetryPolicy(retries=0)},
    workload=_week,
    modes=("streamrec",),
    figures=week_figures,
)

INVALIDATION_STORM = Scenario(
    name="invalidation-storm",
    title="A popular new item and a model promotion",
    description=(
        "A steady request load reads a response cache in front of every ML-100K user's "
        "precomputed candidates while a popular new film arrives, and then a model "
        "promotion. Naive: the invalidation worker broadcasts deletes (every affected "
        "user's candidates and cache entry dropped at once). StreamRec: it coalesces the "
        "changes and refreshes ahead, paced (8 commands/s)."
    ),
    metric="hit_ratio_drop",
    better="lower",
    settings={"naive": {"invalidation": {"mode": "broadcast"}}, "streamrec": {}},
    clients={"naive": RetryPolicy(retries=0), "streamrec": RetryPolicy(retries=0)},
    workload=_flat,
    common={"invalidation": STORM_SETTINGS},
    execute=run_storm,
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (LLM_RATE_LIMIT, INVALIDATION_STORM, RETRY_STORM, REDIS_FAILOVER, EVENING_PEAK, WEEK)
}
