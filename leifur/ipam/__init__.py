"""Pure IP address allocation: pools, allocator, sharing rules. No Kubernetes, no I/O."""
