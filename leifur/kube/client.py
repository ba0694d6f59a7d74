"""The API client (kubeconfig or in-cluster) and plain-JSON requests through it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

# Items per page of a LIST: a reader holds one decoded page at a time besides what it keeps, and
# the memory a page took stays with the process after (what it keeps is allocated among the
# page's objects, so the allocator cannot give those blocks back). client-go's 500 left an agent
# with 5,000 Services at a peak of about 100 MB; 100 per page, about 94 (docs/benchmarks.md).
PAGE_SIZE = 100
# Connections kept open to the API server. Every watch holds one for its life and every worker
# one per write; beyond the pool's size urllib3 closes each connection after use (and logs it),
# and its default, 5 per CPU, is below what the controller's watches and workers use on 2 cores.
CONNECTIONS = 32


def load_client(kubeconfig: str | None = None) -> client.ApiClient:
    """The kubeconfig file if given, else in-cluster config (ServiceAccount token and CA)."""
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, CONNECTIONS)
    return client.ApiClient(cfg)


def request(api_client: client.ApiClient, method: str, path: str, *, query: list[tuple[str, Any]] | None = None,
            body: Any = None, content_type: str = "application/json", timeout: float | tuple[float, float] = 10.0,
            ) -> dict:
    """One JSON request through `api_client` (its auth, TLS, proxy); the decoded body, or ApiException.

    `timeout` is total seconds, or (connect, read). Used by the informer, the leader elector and
    the event recorder so they all talk plain dicts without the typed models.
    """
    resp = send(api_client, method, path, query=query, body=body, content_type=content_type, timeout=timeout)
    data = resp.read()
    text = data.decode("utf-8", "replace") if data else ""
    if not 200 <= resp.status <= 299:
        raise ApiException.from_response(http_resp=resp, body=text, data=None)
    return json.loads(text) if text else {}


def list_all(api_client: client.ApiClient, path: str, *, query: list[tuple[str, Any]] | None = None,
             timeout: float | tuple[float, float] = 30.0, keep: Callable[[dict], dict] | None = None,
             page_size: int = PAGE_SIZE) -> list[dict]:
    """Every item of a LIST, page by page, each passed through `keep` as its page arrives (what the
    caller holds of it). A continue token that outlived etcd's compaction window (410 Gone)
    starts the LIST over in one page."""
    items: list[dict] = []
    cont: str | None = None
    limit: int | None = page_size
    while True:
        q = [*(query or []), *([("limit", limit)] if limit else []), *([("continue", cont)] if cont else [])]
        try:
            body = request(api_client, "GET", path, query=q, timeout=timeout)
        except ApiException as e:
            if e.status == 410 and cont:
                items.clear()
                cont, limit = None, None
                continue
            raise
        items.extend(keep(o) if keep else o for o in body.get("items") or [])
        cont = (body.get("metadata") or {}).get("continue")
        if not cont:
            return items


def send(api_client: client.ApiClient, method: str, path: str, *, query: list[tuple[str, Any]] | None,
          body: Any, content_type: str, timeout: float | tuple[float, float]) -> Any:
    """Start a request and return the raw response (the informer streams watches from it)."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    # param_serialize applies the configuration's auth (bearer token, with its refresh hook).
    method, url, header_params, body, post_params = api_client.param_serialize(
        method, path, query_params=list(query or []), header_params=headers, body=body,
        auth_settings=["BearerToken"])
    return api_client.call_api(method, url, header_params, body, post_params, _request_timeout=timeout)


def describe_error(e: BaseException) -> str:
    """One log line for a failed request: the HTTP status of an API error, else the exception."""
    if isinstance(e, ApiException):
        return f"HTTP {e.status} {e.reason}"
    return f"{type(e).__name__}: {e}"
