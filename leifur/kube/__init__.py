"""The controller pattern: informers, work queue, workers, leader election, events, finalizers."""
