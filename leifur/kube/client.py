"""Building an API client from a kubeconfig or the in-cluster service account."""

from __future__ import annotations

from kubernetes import client, config


def load_client(kubeconfig: str | None = None) -> client.ApiClient:
    """The kubeconfig file if given, else in-cluster config (ServiceAccount token and CA)."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)
