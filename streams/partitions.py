"""Each topic's partition count: `kafka.partitions` (by topic name) over its `TopicSpec`.

A spec's count is the default; `STREAMREC_KAFKA__PARTITIONS='{"events.interactions": 12}'`
overrides it per topic, and a spec without a count takes `kafka.default_partitions`.
`topics apply` creates and grows topics to these counts, Faust declares its topics and the
tables keyed from them with them, and the deploy check sizes consumer groups by them.

The names are checked here rather than in the settings: `infra` sits beside `topics`, not
above it, so the settings cannot know which topics exist (ADR 0132). The CLI checks them at
start-up, before any command runs, as it refuses an unknown variable.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from streamrec.infra.errors import SettingsError
from streamrec.infra.settings import Settings
from streamrec.infra.settings.environment import env_name
from streamrec.topics import ALL_TOPICS, TopicSpec

VARIABLE = env_name("kafka", "partitions")


def check_partitions(settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS) -> None:
    """Raise `SettingsError` when `kafka.partitions` names a topic that is not in `specs`."""
    known = sorted(s.name for s in specs)
    unknown = sorted(set(settings.kafka.partitions) - set(known))
    if not unknown:
        return
    hints = "; ".join(_hint(name, known) for name in unknown)
    raise SettingsError(
        f"invalid settings: {VARIABLE} names no topic: {hints}; the topics are: {', '.join(known)}"
    )


def _hint(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def partitions_of(settings: Settings, spec: TopicSpec) -> int:
    """The partitions `spec`'s topic should have: the setting's, the spec's or the default."""
    configured = settings.kafka.partitions.get(spec.name)
    return configured or spec.partitions or settings.kafka.default_partitions


def partition_counts(settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS) -> dict[str, int]:
    """Each of `specs` by name with its count; an unknown name in the setting is refused."""
    specs = tuple(specs)
    check_partitions(settings, specs)
    return {s.name: partitions_of(settings, s) for s in specs}
