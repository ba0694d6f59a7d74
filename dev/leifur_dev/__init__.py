"""The development environment: a real control plane built from Go modules, and the netns lab."""
