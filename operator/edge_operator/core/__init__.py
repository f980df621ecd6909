"""Pure decisions: placement, catalog, revisions, rollout, manifests, status folding. No I/O, no kopf, no API client."""
