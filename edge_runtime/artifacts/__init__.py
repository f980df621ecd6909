"""Model artifacts at rest: digests, signatures, encryption, and the content-addressed fetch cache."""
