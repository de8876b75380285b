"""Who may ask: API keys and JWTs, their scopes, and the gate in front of the HTTP API.

Responsibilities:
- API keys: `new_key` makes `srk_<key id>_<secret>` (192 random bits), of which only
  `key_hash` (SHA-256, hex) is ever stored; `KeyRing` maps hashes to the keys' records as
  `serving.key_store.KeyFollower` applies them from the compacted auth.keys topic, so a
  revocation published there is known to every process that follows it;
- JWTs (RS256, ES256) verified by PyJWT against a JWKS (a file or a URL), each verified
  token kept in `TokenCache` until its `exp`, so a repeat is one dict lookup;
- `Principal`: who asked, for the audit trail (`key:<id>`, `jwt:<sub>`), what they may ask
  for (a user-scoped credential: only its own `subject`; a service one: any user) and the
  highest admission class their requests get (`priority_for`: a client may lower it, never
  raise it);
- `AuthGate`, the outermost ASGI layer of the HTTP API: `/v1/` (and `/metrics` unless it is
  open) needs a credential, in `Authorization: Bearer <key or token>` or `X-API-Key`; a
  missing or bad one is a 401, a user-scoped one asking for another user a 403, a limited one
  a 429 with `Retry-After` (`serving.rate_limit`); every refusal is a `Problem` body, never a
  traceback. It leaves the `Principal` in `scope["auth"]` (where Starlette's own
  authentication middleware puts its user) for the routes and the front door.

Why hashes and a topic: ADR 0095. Why a cache per token: the system this replaces verified a
JWT on every request (+20-30 ms); a signature check here is ~0.1 ms (RS256) and a cached
token ~1 µs (BENCHMARKS.md, Authentication).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from starlette.types import ASGIApp, Receive, Scope, Send

from streamrec.infra.settings.auth import AuthSettings
from streamrec.serving.raw_response import send_json
from streamrec.serving.schemas import USER_ID_PATTERN
from streamrec.topics.auth_keys import ApiKeyRecord

KEY_PREFIX = "srk_"
KEY_PATTERN = re.compile(r"srk_([a-z0-9]{1,64})_[A-Za-z0-9_-]{16,128}")
ALGORITHMS = ["RS256", "ES256"]
PRIORITY_RANK = {"interactive": 0, "prefetch": 1, "background": 2}
# The user id a recommendations path asks for (the route's own pattern).
USER_PATH = re.compile(r"/v1/users/(" + USER_ID_PATTERN.strip("^$") + r")/recommendations")


def new_key() -> tuple[str, str]:
    """(key id, key): the id is public (lists, logs, the audit trail), the key is shown once."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"


def key_hash(key: str) -> str:
    """What is stored of a key. A plain SHA-256 suffices: the key is 192 random bits, so
    there is nothing to guess from a hash, and a slow hash would cost every request."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asked, and what they may ask for."""

    id: str  # the audit trail's name: key:<key id>, jwt:<sub>
    scope: str  # "user" (only `subject`) or "service" (any user)
    subject: str | None
    priority: str  # the highest admission class
    rate_per_s: float | None = None  # None: the settings' per-key rate
    expires_at: float = math.inf  # wall clock (a token's exp)

    def may_ask_for(self, user_id: str) -> bool:
        return self.scope == "service" or user_id == self.subject

    def priority_for(self, asked: str) -> str:
        """The class a request gets: the one asked for, at most the principal's own."""
        if PRIORITY_RANK.get(asked, 0) > PRIORITY_RANK[self.priority]:
            return asked
        return self.priority


class AuthError(Exception):
    """A refused credential: `status` 401 (who are you?) or 403 (not this)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class KeyRing:
    """API keys by hash, as the auth.keys topic says (written by one follower thread; a
    lookup is a dict read, so the event loop needs no lock)."""

    def __init__(self) -> None:
        self._by_hash: dict[str, Principal] = {}
        self._records: dict[str, ApiKeyRecord] = {}

    def apply(self, record: ApiKeyRecord) -> None:
        old = self._records.get(record.key_id)
        if old is not None and old.key_hash != record.key_hash:
            self._by_hash.pop(old.key_hash, None)
        self._records[record.key_id] = record
        if record.revoked:
            self._by_hash.pop(record.key_hash, None)
        else:
            self._by_hash[record.key_hash] = Principal(
                id=f"key:{record.key_id}",
                scope=record.scope,
                subject=record.subject,
                priority=record.priority,
                rate_per_s=record.rate_per_s,
            )

    def forget(self, key_id: str) -> None:
        """A tombstone: the key's record is gone, and so is the key."""
        old = self._records.pop(key_id, None)
        if old is not None:
            self._by_hash.pop(old.key_hash, None)

    def principal(self, key: str) -> Principal:
        found = self._by_hash.get(key_hash(key))
        if found is not None:
            return found
        match = KEY_PATTERN.fullmatch(key)
        record = self._records.get(match.group(1)) if match else None
        if record is not None and record.revoked:
            raise AuthError(401, f"API key {record.key_id} was revoked")
        raise AuthError(401, "unknown API key")

    def records(self) -> list[ApiKeyRecord]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._by_hash)


class TokenCache:
    """Verified tokens -> their principal, until the token's `exp`. Bounded: when full, the
    expired ones go, then the oldest half (dicts keep insertion order)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._tokens: dict[str, Principal] = {}

    def get(self, token: str, now: float) -> Principal | None:
        found = self._tokens.get(token)
        if found is None:
            return None
        if found.expires_at <= now:
            del self._tokens[token]
            return None
        return found

    def put(self, token: str, principal: Principal, now: float) -> None:
        if len(self._tokens) >= self.max_entries:
            self._tokens = {t: p for t, p in self._tokens.items() if p.expires_at > now}
            if len(self._tokens) >= self.max_entries:
                keep = list(self._tokens.items())[len(self._tokens) // 2 :]
                self._tokens = dict(keep)
        self._tokens[token] = principal

    def __len__(self) -> int:
        return len(self._tokens)


class JwtVerifier:
    """JWT signature and claims checks through PyJWT, with the keys of a JWKS."""

    def __init__(self, cfg: AuthSettings) -> None:
        self.cfg = cfg
        self._keys: dict[str, Any] = {}
        self._client: jwt.PyJWKClient | None = None
        if cfg.jwks_file:
            jwks = jwt.PyJWKSet.from_json(Path(cfg.jwks_file).read_text())
            self._keys = {k.key_id or "": k for k in jwks.keys}
        if cfg.jwks_url:
            # Fetches the set when a token names a kid it has not seen (and caches it).
            self._client = jwt.PyJWKClient(cfg.jwks_url, cache_keys=True, timeout=2)
        self._lock = threading.Lock()

    def _key(self, token: str) -> Any:
        try:
            kid = jwt.get_unverified_header(token).get("kid") or ""
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"malformed token: {exc}") from None
        found = self._keys.get(kid)
        if found is None and len(self._keys) == 1 and not kid:
            found = next(iter(self._keys.values()))
        if found is None and self._client is not None:
            try:
                with self._lock:
                    found = self._client.get_signing_key(kid)
            except jwt.PyJWKClientError as exc:
                raise AuthError(401, f"no signing key for the token: {exc}") from None
        if found is None:
            raise AuthError(401, f"no signing key for the token's kid {kid!r}")
        return found.key

    def verify(self, token: str) -> Principal:
        cfg = self.cfg
        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=ALGORITHMS,
                audience=cfg.jwt_audience or None,
                issuer=cfg.jwt_issuer or None,
                options={"require": ["exp", "sub"], "verify_aud": bool(cfg.jwt_audience)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"invalid token: {exc}") from None
        scopes = claims.get("scope", claims.get("scp", ""))
        names = set(scopes.split() if isinstance(scopes, str) else scopes or ())
        service = cfg.jwt_service_scope in names
        return Principal(
            id=f"jwt:{claims['sub']}",
            scope="service" if service else "user",
            subject=str(claims["sub"]),
            priority=cfg.jwt_service_priority if service else "interactive",
            expires_at=float(claims["exp"]),
        )


class Authenticator:
    """A request's credential -> its `Principal`, or `AuthError`."""

    def __init__(self, cfg: AuthSettings, keys: KeyRing) -> None:
        self.keys = keys
        self.jwt = JwtVerifier(cfg) if cfg.jwks_file or cfg.jwks_url else None
        self.tokens = TokenCache(cfg.token_cache_max)
        self.clock = time.time

    def credential(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        for name, value in headers:
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not rest.strip():
                    raise AuthError(401, "Authorization must be 'Bearer <API key or token>'")
                return rest.strip()
            if name == b"x-api-key":
                return value.decode("latin-1").strip()
        raise AuthError(401, "no credential: send 'Authorization: Bearer <API key or token>'")

    def principal(self, credential: str) -> Principal:
        if credential.startswith(KEY_PREFIX):
            return self.keys.principal(credential)
        now = self.clock()
        found = self.tokens.get(credential, now)
        if found is not None:
            return found
        if self.jwt is None:
            raise AuthError(401, "not an API key, and no JWKS is configured for tokens")
        found = self.jwt.verify(credential)
        self.tokens.put(credential, found, now)
        return found

    def authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> Principal:
        return self.principal(self.credential(headers))


# (principal, user id asked for or None) -> seconds to wait (None: allowed)
Limit = Callable[[Principal, str | None], Awaitable[float | None]]


class AuthGate:
    """The outermost ASGI layer: credential, scope and rate limit of `/v1/` requests."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        limit: Limit | None,
        guard_metrics: bool = False,
        on_refuse: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limit = limit
        self.guard_metrics = guard_metrics
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if scope["type"] != "http" or not (
            path.startswith("/v1/") or (self.guard_metrics and path == "/metrics")
        ):
            await self.app(scope, receive, send)
            return
        try:
            principal = self.authenticator.authenticate(scope["headers"])
            match = USER_PATH.fullmatch(path)
            user_id = match.group(1) if match else None
            if path == "/metrics" and principal.scope != "service":
                raise AuthError(403, "/metrics needs a service key or token")
            if user_id is not None and not principal.may_ask_for(user_id):
                raise AuthError(403, f"{principal.id} may ask only for user {principal.subject!r}")
        except AuthError as exc:
            await self._refuse(
                send, exc.status, exc.detail, "unauthorized" if exc.status == 401 else "forbidden"
            )
            return
        if self.limit is not None:
            wait_s = await self.limit(principal, user_id)
            if wait_s is not None:
                retry = max(1, math.ceil(wait_s))
                await self._refuse(
                    send,
                    429,
                    f"rate limit of {principal.id} exceeded: retry in {retry} s",
                    "rate limited",
                    [(b"retry-after", str(retry).encode())],
                )
                return
        scope["auth"] = principal
        await self.app(scope, receive, send)

    async def _refuse(
        self,
        send: Send,
        status: int,
        detail: str,
        kind: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if self.on_refuse is not None:
            self.on_refuse(kind)
        extra = list(headers or [])
        if status == 401:
            extra.append((b"www-authenticate", b'Bearer realm="streamrec"'))
        # The Problem body of every error answer (serving.schemas.Problem).
        await send_json(send, status, {"detail": detail, "retry": status == 429}, extra)


def principal_of(scope: Scope) -> Principal | None:
    """The principal `AuthGate` let in, or None (auth off)."""
    found = scope.get("auth")
    return found if isinstance(found, Principal) else None


def jwks_json(keys: list[dict[str, Any]]) -> str:
    """A JWKS document (tests and the benchmark write one)."""
    return json.dumps({"keys": keys})
