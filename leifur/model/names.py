"""Names users see: API group, annotations, finalizers, labels, condition types (DESIGN.md)."""

GROUP = "leifur.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
POOLS = "ipaddresspools"
L2ADVERTISEMENTS = "l2advertisements"
L2NODESTATUSES = "l2nodestatuses"
BGPPEERS = "bgppeers"
BGPADVERTISEMENTS = "bgpadvertisements"
BFDPROFILES = "bfdprofiles"

# Service annotations the user writes.
ANN_ADDRESS_POOL = "leifur.io/address-pool"
ANN_LOAD_BALANCER_IPS = "leifur.io/load-balancer-ips"
ANN_ALLOW_SHARED_IP = "leifur.io/allow-shared-ip"
# ...and the one we write.
ANN_ALLOCATED_FROM_POOL = "leifur.io/ip-allocated-from-pool"
# MetalLB's spellings of the three we read, in MetalLB's own order of precedence (it reads
# metallb.io before the deprecated metallb.universe.tf). Ours win over both.
METALLB_ALIASES: dict[str, tuple[str, ...]] = {
    ANN_ADDRESS_POOL: ("metallb.io/address-pool", "metallb.universe.tf/address-pool"),
    ANN_LOAD_BALANCER_IPS: ("metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"),
    ANN_ALLOW_SHARED_IP: ("metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip"),
}

SERVICE_FINALIZER = "leifur.io/load-balancer"
POOL_FINALIZER = "leifur.io/pool-protection"

LABEL_EXCLUDE_LB = "node.kubernetes.io/exclude-from-external-load-balancers"

# The condition we keep on each Service we own (status.conditions).
COND_SERVICE_ALLOCATED = "leifur.io/IPAllocated"
# ...and the one set while an agent reports a host outside the cluster using one of its IPs.
COND_ADDRESS_CONFLICT = "leifur.io/AddressConflict"
# Conditions on our custom objects' status: the spec is usable; it shares something with another object.
COND_VALID = "Valid"
COND_OVERLAPPING = "Overlapping"
# ...on IPAddressPool status.
COND_POOL_VALID = COND_VALID
COND_POOL_OVERLAPPING = COND_OVERLAPPING
COND_POOL_SERVICES_OUTSIDE = "ServicesOutside"

CONTROLLER_NAME = "leifur-controller"
AGENT_NAME = "leifur-agent"
# Events the agent records on Services.
REASON_NODE_ASSIGNED = "NodeAssigned"
REASON_NOT_ANNOUNCED = "NotAnnounced"
REASON_ADDRESS_IN_USE = "AddressInUse"  # a probe found a foreign host using a new IP: not announced
REASON_ADDRESS_CLAIMED = "AddressClaimed"  # a foreign host keeps claiming an IP we announce
REASON_BGP_NOT_CONFIGURED = "BGPNotConfigured"  # an agent could not write part of a BGPPeer into its daemon

# The Secret holding the key that authenticates the agents' heartbeats (the controller creates it
# if it is missing), and its data keys, which the agent reads as files where the Secret is mounted:
# it signs with `current` and accepts `current`, `previous` and `next` (see docs/security.md).
HEARTBEAT_SECRET = "leifur-heartbeat-key"
HEARTBEAT_KEY_CURRENT = "current"
HEARTBEAT_KEY_PREVIOUS = "previous"
HEARTBEAT_KEY_NEXT = "next"
HEARTBEAT_KEY_DIR = "/etc/leifur/heartbeat-key"
# Bytes the controller generates; the agent refuses a key shorter than this.
HEARTBEAT_KEY_BYTES = 32

# BGP mode's kinds (DESIGN.md); their plurals are with the others at the top.
BGP_PEER = "BGPPeer"
BGP_ADVERTISEMENT = "BGPAdvertisement"
BFD_PROFILE = "BFDProfile"
