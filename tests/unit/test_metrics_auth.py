"""Who may read the metrics port, decided: when to ask the API server, what to answer when it cannot
be asked (the last decision, whatever its age; else 503), what to forget first. The reviews
themselves are the API server's: tests/integration/test_metrics_port.py runs them for real."""

from __future__ import annotations

import hashlib

import pytest

from leifur.kube.metrics_auth import (
    ALLOWED,
    FORBIDDEN,
    UNAUTHENTICATED,
    UNAVAILABLE,
    Authorizer,
    Decision,
    ReviewFailed,
    after_review,
    bearer_token,
    key_of,
    must_ask,
    to_evict,
)
from leifur.model.settings import MetricsAuthSettings

S = MetricsAuthSettings(cache_seconds=60, retry_after_failure=5, max_entries=3)


@pytest.mark.parametrize(("header", "token"), [
    (None, None),
    ("", None),
    ("Bearer abc.def", "abc.def"),
    ("bearer abc", "abc"),  # the scheme is case-insensitive
    ("  Bearer   abc  ", "abc"),
    ("Bearer", None),
    ("Bearer ", None),
    ("Basic dXNlcjpwYXNz", None),
    ("Bearer a b", None),
    ("abc", None),
], ids=["absent", "empty", "bearer", "lower-case-scheme", "spaces-around", "scheme-alone", "scheme-and-space",
        "basic-auth", "two-words", "no-scheme"])
def test_the_bearer_token_of_a_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_a_decision_is_remembered_by_the_tokens_hash_and_the_path_never_the_token() -> None:
    key = key_of("secret-token", "/metrics")
    assert key == (hashlib.sha256(b"secret-token").hexdigest(), "/metrics")
    assert "secret-token" not in repr(key)
    assert key_of("secret-token", "/readyz") != key


def decided(at: float, status: int = ALLOWED, failed_at: float | None = None) -> Decision:
    return Decision(status, "system:serviceaccount:monitoring:prometheus-k8s", at, failed_at)


@pytest.mark.parametrize(("cached", "now", "ask"), [
    (None, 100.0, True),
    (decided(100.0), 100.0, False),
    (decided(100.0), 159.9, False),
    (decided(100.0), 160.0, True),
    (decided(100.0, FORBIDDEN), 130.0, False),
    (decided(100.0, UNAUTHENTICATED), 170.0, True),
    (decided(100.0, failed_at=170.0), 174.9, False),
    (decided(100.0, failed_at=170.0), 175.0, True),
    (decided(100.0, failed_at=100.0), 200.0, True),
], ids=["nothing-remembered", "just-decided", "fresh-until-60s", "stale-at-60s", "refusals-are-remembered-too",
        "stale-refusal", "failed-a-moment-ago", "retry-after-5s", "failed-long-ago"])
def test_when_to_ask_the_api_server(cached: Decision | None, now: float, ask: bool) -> None:
    assert must_ask(cached, now, S) is ask


@pytest.mark.parametrize(("cached", "fresh", "answer", "kept"), [
    (None, decided(200.0), ALLOWED, decided(200.0)),
    (decided(10.0), decided(200.0, FORBIDDEN), FORBIDDEN, decided(200.0, FORBIDDEN)),
    (decided(10.0, FORBIDDEN), decided(200.0), ALLOWED, decided(200.0)),
    (None, None, UNAVAILABLE, None),
    (decided(10.0), None, ALLOWED, decided(10.0, failed_at=200.0)),
    (decided(-86400.0), None, ALLOWED, decided(-86400.0, failed_at=200.0)),
    (decided(10.0, FORBIDDEN), None, FORBIDDEN, decided(10.0, FORBIDDEN, failed_at=200.0)),
    (decided(10.0, UNAUTHENTICATED), None, UNAUTHENTICATED, decided(10.0, UNAUTHENTICATED, failed_at=200.0)),
], ids=["first-decision", "role-removed", "role-granted", "unreachable-nothing-known",
        "unreachable-last-allowed", "unreachable-a-day-old-decision-still-stands",
        "unreachable-last-forbidden", "unreachable-last-unauthenticated"])
def test_what_to_answer_and_remember_after_asking(cached: Decision | None, fresh: Decision | None, answer: int,
                                                   kept: Decision | None) -> None:
    assert after_review(cached, fresh, 200.0) == (answer, kept)


def k(name: str) -> tuple[str, str]:
    return (name, "/metrics")


@pytest.mark.parametrize(("entries", "limit", "evicted"), [
    ({}, 3, []),
    ({k("a"): decided(1.0), k("b"): decided(2.0), k("c"): decided(3.0)}, 3, []),
    ({k("a"): decided(1.0), k("b"): decided(2.0), k("c"): decided(3.0), k("d"): decided(4.0)}, 3, [k("a")]),
    ({k("a"): decided(1.0), k("b"): decided(5.0, UNAUTHENTICATED), k("c"): decided(3.0),
      k("d"): decided(4.0)}, 3, [k("b")]),
    ({k("a"): decided(1.0), k("b"): decided(5.0, FORBIDDEN), k("c"): decided(6.0, UNAUTHENTICATED),
      k("d"): decided(4.0), k("e"): decided(2.0)}, 3, [k("b"), k("c")]),
    ({k("a"): decided(1.0), k("b"): decided(2.0, UNAUTHENTICATED), k("c"): decided(3.0),
      k("d"): decided(4.0), k("e"): decided(5.0)}, 3, [k("b"), k("a")]),
], ids=["empty", "at-the-limit", "oldest-goes", "a-refusal-goes-before-older-allowed",
        "refusals-first-oldest-first", "then-the-oldest-allowed"])
def test_what_to_forget_beyond_the_limit(entries: dict[tuple[str, str], Decision], limit: int,
                                         evicted: list[tuple[str, str]]) -> None:
    assert to_evict(entries, limit) == evicted


# -- the Authorizer: the decisions above around a reviewer that stands in for the API server --------


class Reviewer:
    """Answers like the API server from a table of tokens; `down` makes it unreachable."""

    def __init__(self, allowed: dict[str, set[str]]) -> None:
        self.allowed = allowed  # token -> the paths it may get; absent: not a valid token
        self.down = False
        self.asked: list[tuple[str, str]] = []

    def __call__(self, token: str, path: str, now: float) -> Decision:
        self.asked.append((token, path))
        if self.down:
            raise ReviewFailed("connection refused")
        if token not in self.allowed:
            return Decision(UNAUTHENTICATED, "", now)
        return Decision(ALLOWED if path in self.allowed[token] else FORBIDDEN, f"user-{token}", now)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world() -> tuple[Authorizer, Reviewer, Clock]:
    reviewer, clock = Reviewer({"prom": {"/metrics"}, "nobody": set()}), Clock()
    return Authorizer(None, MetricsAuthSettings(), clock, reviewer), reviewer, clock


# Each step: (seconds later, API server down?, Authorization header, path, expected status, asked the API?)
SCENARIOS = {
    "no-token-is-refused-without-asking": [(0, False, None, "/metrics", UNAUTHENTICATED, False),
                                           (0, False, "Basic eDp5", "/metrics", UNAUTHENTICATED, False)],
    "allowed-then-from-the-cache-for-60s": [(0, False, "Bearer prom", "/metrics", ALLOWED, True),
                                            (59, False, "Bearer prom", "/metrics", ALLOWED, False),
                                            (1, False, "Bearer prom", "/metrics", ALLOWED, True)],
    "each-path-is-its-own-decision": [(0, False, "Bearer prom", "/metrics", ALLOWED, True),
                                      (0, False, "Bearer prom", "/healthz", FORBIDDEN, True),
                                      (0, False, "Bearer prom", "/healthz", FORBIDDEN, False)],
    "without-the-role": [(0, False, "Bearer nobody", "/metrics", FORBIDDEN, True)],
    "an-invalid-token-is-remembered-as-such": [(0, False, "Bearer forged", "/metrics", UNAUTHENTICATED, True),
                                               (30, False, "Bearer forged", "/metrics", UNAUTHENTICATED, False)],
    "api-down-the-last-decision-stands-whatever-its-age": [
        (0, False, "Bearer prom", "/metrics", ALLOWED, True),
        (3600, True, "Bearer prom", "/metrics", ALLOWED, True),
        # Asked again only after retry_after_failure, not on every scrape.
        (1, True, "Bearer prom", "/metrics", ALLOWED, False),
        (5, True, "Bearer prom", "/metrics", ALLOWED, True),
        (0, True, "Bearer nobody", "/metrics", UNAVAILABLE, True),
        (0, True, "Bearer prom", "/readyz", UNAVAILABLE, True),
        # Back: decided anew.
        (5, False, "Bearer prom", "/metrics", ALLOWED, True),
    ],
}


@pytest.mark.parametrize("steps", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_the_authorizer_asks_and_answers(world, steps) -> None:
    authorizer, reviewer, clock = world
    for i, (later, down, header, path, status, asked) in enumerate(steps):
        clock.now += later
        reviewer.down = down
        before = len(reviewer.asked)
        assert authorizer.check(header, path) == status, f"step {i}"
        assert (len(reviewer.asked) > before) is asked, f"step {i}"


def test_the_authorizer_keeps_at_most_max_entries_and_forgets_refusals_first() -> None:
    reviewer, clock = Reviewer({"prom": {"/metrics"}}), Clock()
    authorizer = Authorizer(None, MetricsAuthSettings(max_entries=3), clock, reviewer)
    assert authorizer.check("Bearer prom", "/metrics") == ALLOWED
    for i in range(10):
        clock.now += 1
        assert authorizer.check(f"Bearer made-up-{i}", "/metrics") == UNAUTHENTICATED
    # A flood of made-up tokens did not push out the one that matters during an outage.
    reviewer.down = True
    clock.now += 3600
    assert authorizer.check("Bearer prom", "/metrics") == ALLOWED
