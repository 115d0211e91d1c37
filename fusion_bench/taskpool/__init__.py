"""Task pools: evaluate a (fused) model on a set of tasks."""
