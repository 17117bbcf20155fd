"""Pretraining: SimCLR (NT-Xent loss, projection head, augmenter), the supervised baseline, collapse
monitors and the `pretrain` command."""
