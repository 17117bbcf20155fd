"""Localization on a backbone: box augmenter, losses, metrics, heads, the regressor, baselines, and the
`detect`, `evaluate` and `predict` commands."""
