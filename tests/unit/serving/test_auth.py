"""Keys, scopes, the token cache and JWT checks (real RSA / EC keys through PyJWT), and the
401 / 403 / 429 answers of the real ASGI app (in memory: its recommender is a stand-in, its
limits local because no Redis is reachable)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient

from streamrec.infra.processes import free_port
from streamrec.infra.settings import Settings
from streamrec.serving.app import create_app
from streamrec.serving.auth import (
    Authenticator,
    AuthError,
    KeyRing,
    Principal,
    TokenCache,
    key_hash,
    new_key,
)
from streamrec.serving.worker import ServingWorker
from streamrec.topics import ApiKeyRecord
from tests.serving_doubles import InstantRecommender


def record(key: str, key_id: str, scope: str = "service", **kw: Any) -> ApiKeyRecord:
    return ApiKeyRecord(key_id=key_id, key_hash=key_hash(key), scope=scope, **kw)  # type: ignore[arg-type]


def test_a_key_is_random_and_only_its_hash_is_kept():
    (id1, key1), (id2, key2) = new_key(), new_key()
    assert key1.startswith(f"srk_{id1}_") and id1 != id2 and key1 != key2
    secret = key1.removeprefix(f"srk_{id1}_")  # url-safe base64: may hold "_" itself
    assert len(secret) == 32  # 192 random bits
    assert key_hash(key1) != key_hash(key2) and len(key_hash(key1)) == 64
    stored = record(key1, id1).model_dump_json()
    assert key1 not in stored and secret not in stored


def test_the_ring_knows_created_keys_and_refuses_revoked_and_unknown_ones():
    ring = KeyRing()
    key_id, key = new_key()
    rec = record(key, key_id, scope="user", subject="7", priority="prefetch")
    ring.apply(rec)
    p = ring.principal(key)
    assert (p.id, p.scope, p.subject, p.priority) == (f"key:{key_id}", "user", "7", "prefetch")
    ring.apply(rec.revoke())
    with pytest.raises(AuthError, match=f"API key {key_id} was revoked") as exc:
        ring.principal(key)
    assert exc.value.status == 401
    with pytest.raises(AuthError, match="unknown API key"):
        ring.principal(new_key()[1])
    ring.forget(key_id)
    assert len(ring) == 0


def test_a_user_scope_asks_only_for_its_subject_and_a_client_only_lowers_its_priority():
    user = Principal("key:a", "user", "7", "prefetch")
    service = Principal("key:b", "service", None, "interactive")
    assert user.may_ask_for("7") and not user.may_ask_for("8")
    assert service.may_ask_for("8")
    assert user.priority_for("interactive") == "prefetch"  # cannot raise itself
    assert user.priority_for("background") == "background"  # may lower
    assert service.priority_for("prefetch") == "prefetch"


def test_the_token_cache_holds_a_token_until_its_expiry_and_stays_bounded():
    cache = TokenCache(max_entries=4)
    cache.put("t1", Principal("jwt:a", "user", "a", "interactive", expires_at=100.0), now=0.0)
    assert cache.get("t1", now=99.0) is not None
    assert cache.get("t1", now=100.0) is None and len(cache) == 0
    for i in range(10):
        cache.put(f"t{i}", Principal("jwt:a", "user", "a", "interactive", expires_at=1e9), 0.0)
    assert len(cache) <= 4
    assert cache.get("t9", now=0.0) is not None  # the newest stays


def _jwks(tmp_path: Path, algorithm: str) -> tuple[Any, Path]:
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    jwk = json.loads(
        jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(private.public_key())
    )
    jwk.update(kid="k1", alg=algorithm, use="sig")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return private, path


def _token(private: Any, algorithm: str, **claims: Any) -> str:
    body = {"sub": "7", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(body, private, algorithm=algorithm, headers={"kid": "k1"})


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_signed_token_is_verified_once_then_served_from_the_cache(tmp_path, algorithm):
    private, path = _jwks(tmp_path, algorithm)
    cfg = Settings().auth.model_copy(update={"jwks_file": str(path), "jwt_audience": "recs"})
    auth = Authenticator(cfg, KeyRing())
    token = _token(private, algorithm, aud="recs")
    p = auth.principal(token)
    assert (p.id, p.scope, p.subject) == ("jwt:7", "user", "7")
    assert auth.principal(token) is p  # the cached one
    service = auth.principal(_token(private, algorithm, aud="recs", scope="recs:service"))
    assert service.scope == "service"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": 1}, "token expired"),
        ({"aud": "other"}, "invalid token"),
        ({"sub": None}, "invalid token"),
    ],
)
def test_bad_tokens_are_401_with_the_reason(tmp_path, claims, reason):
    private, path = _jwks(tmp_path, "RS256")
    cfg = Settings().auth.model_copy(update={"jwks_file": str(path), "jwt_audience": "recs"})
    auth = Authenticator(cfg, KeyRing())
    body = {"aud": "recs", **claims}
    token = _token(private, "RS256", **{k: v for k, v in body.items() if v is not None})
    if claims.get("sub", "") is None:  # a token without a subject
        token = jwt.encode(
            {"aud": "recs", "exp": int(time.time()) + 60}, private, "RS256", headers={"kid": "k1"}
        )
    with pytest.raises(AuthError, match=reason) as exc:
        auth.principal(token)
    assert exc.value.status == 401


def test_a_token_signed_by_another_key_is_refused(tmp_path):
    _, path = _jwks(tmp_path, "RS256")
    other, _ = _jwks(tmp_path / "..", "RS256")
    cfg = Settings().auth.model_copy(update={"jwks_file": str(path)})
    with pytest.raises(AuthError, match="Signature verification failed"):
        Authenticator(cfg, KeyRing()).principal(_token(other, "RS256"))


# --- the real app --------------------------------------------------------------------------


@pytest.fixture
def app_and_keys():
    # Redis is not reachable on this port: the limits run on their local share (as in an outage)
    settings = Settings().with_overrides(
        auth={"mode": "on", "key_burst": 3, "key_rate_per_s": 0.01, "user_rate_per_s": 0},
        redis={"url": f"redis://127.0.0.1:{free_port()}/0"},
    )
    worker = ServingWorker(settings)
    worker.recommender = InstantRecommender()  # type: ignore[assignment]
    app = create_app(settings, worker)
    keys = {}
    for name, scope, subject, priority in (
        ("service", "service", None, "prefetch"),
        ("user7", "user", "7", "interactive"),
    ):
        key_id, key = new_key()
        app.state.keys.apply(record(key, key_id, scope, subject=subject, priority=priority))
        keys[name] = (key_id, key)
    return TestClient(app, raise_server_exceptions=False), worker.recommender, keys


def _get(client, path, key=None, **params):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.get(path, params=params, headers=headers)


def test_no_credential_or_a_bad_one_is_401_with_the_reason_and_no_traceback(app_and_keys, caplog):
    client, _, _ = app_and_keys
    r = _get(client, "/v1/users/7/recommendations")
    assert r.status_code == 401 and "no credential" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.get("/v1/users/7/recommendations", headers={"Authorization": "Basic x"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    r = _get(client, "/v1/users/7/recommendations", key="srk_abc_" + "x" * 32)
    assert r.status_code == 401 and r.json()["detail"] == "unknown API key"
    r = _get(client, "/v1/users/7/recommendations", key="eyJ.not.atoken")
    assert r.status_code == 401 and "no JWKS" in r.json()["detail"]
    assert "Traceback" not in caplog.text


def test_open_routes_stay_open(app_and_keys):
    client, _, _ = app_and_keys
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_a_user_key_gets_its_own_user_only_and_its_priority_comes_from_the_key(app_and_keys):
    client, recommender, keys = app_and_keys
    user_key = keys["user7"][1]
    r = _get(client, "/v1/users/8/recommendations", user_key)
    assert r.status_code == 403 and "may ask only for user '7'" in r.json()["detail"]
    r = client.post("/v1/users/8/recommendations", json={"k": 5}, headers={"X-API-Key": user_key})
    assert r.status_code == 403
    assert _get(client, "/v1/users/7/recommendations", user_key).status_code == 200
    service_id, service_key = keys["service"]
    # the fast GET path and FastAPI's POST route alike: the key's class caps the client's
    assert (
        _get(client, "/v1/users/8/recommendations", service_key, priority="interactive").status_code
        == 200
    )
    r = client.post(
        "/v1/users/9/recommendations",
        json={"priority": "interactive"},
        headers={"Authorization": f"Bearer {service_key}"},
    )
    assert r.status_code == 200
    asked = recommender.queries
    assert [(q.user_id, q.priority, q.principal) for q in asked] == [
        ("7", "interactive", f"key:{keys['user7'][0]}"),
        ("8", "prefetch", f"key:{service_id}"),
        ("9", "prefetch", f"key:{service_id}"),
    ]


def test_past_its_burst_a_key_gets_429_with_retry_after(app_and_keys):
    client, _, keys = app_and_keys
    key = keys["service"][1]
    codes = [_get(client, "/v1/users/1/recommendations", key).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]  # burst 3, one process: the whole limit locally
    r = _get(client, "/v1/users/1/recommendations", key)
    assert int(r.headers["retry-after"]) >= 1 and "rate limit of key:" in r.json()["detail"]
    # another key is not limited by this one
    assert _get(client, "/v1/users/7/recommendations", keys["user7"][1]).status_code == 200
