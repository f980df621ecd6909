"""Watches to reconciles: kopf wiring, typed caches, event mapping, work queues, reconcilers, status writes."""
