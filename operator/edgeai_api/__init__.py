"""The CRDs' shared vocabulary, imported by the operator, `pack` and the runtime alike."""
