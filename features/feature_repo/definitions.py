"""StreamRec's Feast objects: entities, sources, feature views and versioned feature services.

Flat declarations, named by kind (`user_session_fv`, `user_session_push_source`, ...). Each
field list is declared once and shared by the view and the writers (`features.rows`). Offline
sources are Parquet files with paths relative to the Feast repo path, which
`features.feast_store` sets to `<state dir>/features/`: the backfill writes them there.

| view | written by | online | offline |
| --- | --- | --- | --- |
| `user_session_fv` | session processor (push), backfill | yes | `offline/user_session.parquet` |
| `user_longterm_fv` | backfill (batch) | yes | `offline/user_longterm.parquet` |
| `item_fv` | backfill (catalog) | yes | `offline/item.parquet` |
| `item_popularity_fv` | trending (push), backfill | yes | `offline/item_popularity.parquet` |
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float64, Int64, String

OWNER = {"owner": "features@streamrec", "issue": "4"}
TIMESTAMP_FIELD = "event_timestamp"

# --- entities -------------------------------------------------------------------------------

# A user of the video service; join key as in events.interactions.
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="a user (events.interactions user_id)",
    tags=OWNER,
)

# An item of the catalog; join key as in catalog.items.
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="a catalog item (catalog.items item_id)",
    tags=OWNER,
)

# --- field lists (declared once) -------------------------------------------------------------

USER_SESSION_FIELDS = [
    Field(name="last_items", dtype=Array(String), description="last 10 item ids, newest last"),
    Field(name="session_start_ms", dtype=Int64, description="current session start, epoch ms"),
    Field(name="session_length_s", dtype=Float64, description="last - first event of session"),
    Field(name="session_interactions", dtype=Int64, description="events in current session"),
    Field(
        name="genre_affinity",
        dtype=Array(Float64),
        description="19 MovieLens genres, exponentially decayed to last_event_ms",
    ),
    Field(name="last_event_ms", dtype=Int64, description="latest event time seen, epoch ms"),
]

USER_LONGTERM_FIELDS = [
    Field(name="total_interactions", dtype=Int64, description="all interactions so far"),
    Field(name="top_genres", dtype=Array(String), description="top 3 genres by count"),
    Field(name="mean_rating", dtype=Float64, description="mean of the ratings given (0: none)"),
]

ITEM_FIELDS = [
    Field(name="genres", dtype=Array(String), description="catalog genres"),
    Field(name="year", dtype=Int64, description="release year (0: unknown)"),
]

ITEM_POPULARITY_FIELDS = [
    Field(name="count_1h", dtype=Int64, description="interactions in the latest 1 h window"),
    Field(name="count_24h", dtype=Int64, description="interactions in the latest 24 h window"),
    Field(name="window_end_ms", dtype=Int64, description="end of those windows (event time)"),
]

# --- sources ---------------------------------------------------------------------------------

# Offline history of session features, one row per accepted event (backfill).
user_session_file_source = FileSource(
    name="user_session_file_source",
    path="offline/user_session.parquet",
    timestamp_field=TIMESTAMP_FIELD,
    tags=OWNER,
)

# Fresh session features: the session processor pushes here in micro-batches.
user_session_push_source = PushSource(
    name="user_session_push_source",
    batch_source=user_session_file_source,
    tags=OWNER,
)

# Long-term user features, one row per user per day of activity (backfill).
user_longterm_file_source = FileSource(
    name="user_longterm_file_source",
    path="offline/user_longterm.parquet",
    timestamp_field=TIMESTAMP_FIELD,
    tags=OWNER,
)

# Catalog metadata, one row per item (backfill from catalog.items).
item_file_source = FileSource(
    name="item_file_source",
    path="offline/item.parquet",
    timestamp_field=TIMESTAMP_FIELD,
    tags=OWNER,
)

# Windowed popularity history (backfill).
item_popularity_file_source = FileSource(
    name="item_popularity_file_source",
    path="offline/item_popularity.parquet",
    timestamp_field=TIMESTAMP_FIELD,
    tags=OWNER,
)

# Fresh popularity counts: the trending processor pushes here.
item_popularity_push_source = PushSource(
    name="item_popularity_push_source",
    batch_source=item_popularity_file_source,
    tags=OWNER,
)

# --- feature views ---------------------------------------------------------------------------

# What the user is doing now; fresh within a second of the event.
user_session_fv = FeatureView(
    name="user_session_fv",
    entities=[user],
    ttl=timedelta(days=90),
    schema=USER_SESSION_FIELDS,
    source=user_session_push_source,
    online=True,
    description="session features kept fresh by the session processor",
    tags={**OWNER, "freshness": "stream"},
)

# What the user likes over their whole history; rebuilt by the backfill.
user_longterm_fv = FeatureView(
    name="user_longterm_fv",
    entities=[user],
    ttl=timedelta(days=365),
    schema=USER_LONGTERM_FIELDS,
    source=user_longterm_file_source,
    online=True,
    description="long-term user features (batch)",
    tags={**OWNER, "freshness": "batch"},
)

# Catalog facts about an item; static metadata stamped at the epoch, so it never expires
# (ttl 0 = no limit on how far back a point-in-time join looks).
item_fv = FeatureView(
    name="item_fv",
    entities=[item],
    ttl=timedelta(0),
    schema=ITEM_FIELDS,
    source=item_file_source,
    online=True,
    description="item metadata features from the catalog",
    tags={**OWNER, "freshness": "batch"},
)

# How popular an item is right now (event time windows).
item_popularity_fv = FeatureView(
    name="item_popularity_fv",
    entities=[item],
    ttl=timedelta(days=30),
    schema=ITEM_POPULARITY_FIELDS,
    source=item_popularity_push_source,
    online=True,
    description="windowed item popularity kept by the trending processor",
    tags={**OWNER, "freshness": "stream"},
)

# --- feature services (versioned; each version tracks a ranking-model version) ---------------

user_features_v1 = FeatureService(
    name="user_features_v1",
    features=[user_session_fv, user_longterm_fv],
    description="everything known about a user, for serving and candidates",
    tags={**OWNER, "model": "ranker-v1"},
)

item_features_v1 = FeatureService(
    name="item_features_v1",
    features=[item_fv, item_popularity_fv],
    description="everything known about an item",
    tags={**OWNER, "model": "ranker-v1"},
)

ranking_v1 = FeatureService(
    name="ranking_v1",
    features=[user_session_fv, user_longterm_fv, item_fv, item_popularity_fv],
    description="the features of ranking model v1 (user x item)",
    tags={**OWNER, "model": "ranker-v1"},
)

ENTITIES = [user, item]
DATA_SOURCES = [
    user_session_file_source,
    user_session_push_source,
    user_longterm_file_source,
    item_file_source,
    item_popularity_file_source,
    item_popularity_push_source,
]
FEATURE_VIEWS = [user_session_fv, user_longterm_fv, item_fv, item_popularity_fv]
FEATURE_SERVICES = [user_features_v1, item_features_v1, ranking_v1]
