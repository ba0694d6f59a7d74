"""Who may read the metrics port: the caller's bearer token, authenticated by a TokenReview and
authorised by a SubjectAccessReview (`get` on the request's path as a non-resource URL), as
controller-runtime's metrics filter, kube-rbac-proxy and MetalLB do.

The decisions (whether to ask the API server, what to answer, what to remember) are pure
functions of what was remembered and the clock, checked by the tables in
tests/unit/test_metrics_auth.py. `Authorizer` wires them to the two API requests.

Each decision is remembered per SHA-256 of the token (never the token itself) and path, for
`MetricsAuthSettings.cache_seconds`. When the API server cannot answer, the last decision for
that token and path is used whatever its age: metrics matter most during an outage of the API
server. The price: a token revoked, or a role unbound, keeps working while the API server
cannot be reached (docs/security.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from leifur.kube.client import describe_error, request
from leifur.model.settings import MetricsAuthSettings

log = logging.getLogger("leifur.metrics_auth")

ALLOWED = 200
UNAUTHENTICATED = 401
FORBIDDEN = 403
UNAVAILABLE = 503

TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


@dataclass(frozen=True)
class Decision:
    """The API server's answer for one token and path, and when it was given (monotonic seconds)."""

    status: int  # ALLOWED, UNAUTHENTICATED or FORBIDDEN
    user: str  # the token's user, for the log; "" when the token was not authenticated
    decided_at: float
    # The last time asking again failed, while this decision stood in for a new one.
    failed_at: float | None = None


Key = tuple[str, str]  # (SHA-256 of the token, path)


# -- the pure decisions -------------------------------------------------------------------------


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header; None when there is none to check."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    # RFC 7235: the scheme is case-insensitive. A token has no spaces.
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def key_of(token: str, path: str) -> Key:
    # Only the hash is kept: a memory dump of the process shows no caller's token.
    return hashlib.sha256(token.encode()).hexdigest(), path


def must_ask(cached: Decision | None, now: float, settings: MetricsAuthSettings) -> bool:
    """Whether to ask the API server, or answer from `cached`."""
    if cached is None:
        return True
    if now - cached.decided_at < settings.cache_seconds:
        return False
    # Stale, and asking failed a moment ago: answer from it rather than wait for another timeout.
    return cached.failed_at is None or now - cached.failed_at >= settings.retry_after_failure


def after_review(cached: Decision | None, fresh: Decision | None, now: float) -> tuple[int, Decision | None]:
    """What to answer, and what to remember, once the API server was asked.

    `fresh` is its decision, or None when it could not give one (unreachable, timed out, or our own
    request refused): then the last decision stands, whatever its age, else the answer is 503.
    """
    if fresh is not None:
        return fresh.status, fresh
    if cached is None:
        return UNAVAILABLE, None
    return cached.status, dataclasses.replace(cached, failed_at=now)


def to_evict(entries: Mapping[Key, Decision], limit: int) -> list[Key]:
    """The entries to forget to keep at most `limit`: refusals first (anyone can make them up by the
    thousand, and forgetting one costs only a review), then the oldest decisions."""
    over = len(entries) - limit
    if over <= 0:
        return []
    order = sorted(entries, key=lambda k: (entries[k].status == ALLOWED, entries[k].decided_at))
    return order[:over]


# -- the effects ------------------------------------------------------------------------------


class ReviewFailed(Exception):
    """The API server gave no decision (unreachable, timed out, or refused our own request)."""


def review(api_client: client.ApiClient, token: str, path: str, timeout: float, now: float) -> Decision:
    """Ask the API server who `token` is (TokenReview), then whether they may `get` `path`
    (SubjectAccessReview). Raises ReviewFailed when it gives no answer."""
    try:
        reviewed = request(api_client, "POST", TOKEN_REVIEWS, timeout=(timeout, timeout), body={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
        status: dict[str, Any] = reviewed.get("status") or {}
        if not status.get("authenticated"):
            return Decision(UNAUTHENTICATED, "", now)
        user: dict[str, Any] = status.get("user") or {}
        spec: dict[str, Any] = {
            "user": user.get("username", ""), "groups": user.get("groups") or [],
            "nonResourceAttributes": {"path": path, "verb": "get"},
        }
        for field in ("uid", "extra"):
            if user.get(field):
                spec[field] = user[field]
        access = request(api_client, "POST", ACCESS_REVIEWS, timeout=(timeout, timeout), body={
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})
    except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
        # urllib3's errors: connection refused, reset or timed out, once its retries are spent;
        # ValueError: a body that is not JSON (a proxy's error page).
        raise ReviewFailed(describe_error(e)) from e
    allowed = (access.get("status") or {}).get("allowed") is True
    return Decision(ALLOWED if allowed else FORBIDDEN, spec["user"], now)


class Authorizer:
    """Answers, for a request's Authorization header and path, the HTTP status to give it: 200 to
    serve it, else 401, 403 or 503. Thread-safe: the HTTP server asks from one thread per request."""

    def __init__(self, api_client: client.ApiClient, settings: MetricsAuthSettings | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 reviewer: Callable[[str, str, float], Decision] | None = None) -> None:
        self.settings = settings = settings or MetricsAuthSettings()
        self._clock = clock
        self._review = reviewer or (lambda token, path, now: review(api_client, token, path,
                                                                     settings.review_timeout, now))
        self._lock = threading.Lock()
        self._decisions: dict[Key, Decision] = {}
        self._failure_logged = -1e18

    def check(self, authorization: str | None, path: str) -> int:
        token = bearer_token(authorization)
        if token is None:
            return UNAUTHENTICATED  # nothing to ask the API server about
        key = key_of(token, path)
        with self._lock:
            cached = self._decisions.get(key)
        now = self._clock()
        if not must_ask(cached, now, self.settings):
            assert cached is not None
            return cached.status
        fresh: Decision | None = None
        try:
            fresh = self._review(token, path, now)
        except ReviewFailed as e:
            self._log_failure(cached, path, str(e), now)
        answer, keep = after_review(cached, fresh, now)
        if fresh is not None and fresh.status != ALLOWED:
            # Debug only: anyone who reaches the port can send made-up tokens by the thousand.
            log.debug("refused %s: %s", path, f"{fresh.user} may not get it" if fresh.user else "token not valid")
        with self._lock:
            if keep is not None:
                self._decisions[key] = keep
            for k in to_evict(self._decisions, self.settings.max_entries):
                del self._decisions[k]
        return answer

    def _log_failure(self, cached: Decision | None, path: str, error: str, now: float) -> None:
        # At most one warning per retry interval: during an outage every scrape fails the same way.
        level = logging.WARNING if now - self._failure_logged >= self.settings.retry_after_failure else logging.DEBUG
        if level == logging.WARNING:
            self._failure_logged = now
        if cached is None:
            log.log(level, "could not review a token for %s (%s): answering %d", path, error, UNAVAILABLE)
        else:
            log.log(level, "could not review the token of %s for %s (%s): answering %d, as decided %.0f s ago",
                    cached.user or "an unauthenticated caller", path, error, cached.status, now - cached.decided_at)
