"""The Service reconcile: decide, allocate, write status; finalizer-guarded."""
