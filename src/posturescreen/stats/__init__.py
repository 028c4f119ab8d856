"""Statistics over arrays: metrics, the subject bootstrap, comparisons, levels."""
