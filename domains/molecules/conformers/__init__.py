"""Graph-conditioned conformer generation (docs/conformers.md)."""
