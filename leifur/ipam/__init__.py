"""Pure IP address allocation: pools, allocator, sharing rules. No Kubernetes, no I/O."""

from leifur.ipam.allocator import (
    EXHAUSTED,
    FAMILY_UNAVAILABLE,
    NO_POOL,
    NOT_IN_POOL,
    REASONS,
    TAKEN,
    AllocationError,
    Allocator,
)
from leifur.ipam.errors import PoolError
from leifur.ipam.pool import AddressRange, Pool, find_overlaps, parse_address_entry, parse_pool
from leifur.ipam.selectors import (
    ServiceAllocation,
    candidate_pools,
    parse_service_allocation,
    selector_matches,
    validate_label_selector,
)
from leifur.ipam.sharing import incompatibility
from leifur.model.service import IP, ServiceTraits

__all__ = [
    "EXHAUSTED",
    "FAMILY_UNAVAILABLE",
    "IP",
    "NOT_IN_POOL",
    "NO_POOL",
    "REASONS",
    "TAKEN",
    "AddressRange",
    "AllocationError",
    "Allocator",
    "Pool",
    "PoolError",
    "ServiceAllocation",
    "ServiceTraits",
    "candidate_pools",
    "find_overlaps",
    "incompatibility",
    "parse_address_entry",
    "parse_pool",
    "parse_service_allocation",
    "selector_matches",
    "validate_label_selector",
]
