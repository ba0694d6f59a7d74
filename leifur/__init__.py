"""Leifur: a bare-metal load balancer for Kubernetes."""

__version__ = "0.1.0"
