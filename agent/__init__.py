"""The per-node agent: election, ARP/NDP/netlink announcers, health."""
