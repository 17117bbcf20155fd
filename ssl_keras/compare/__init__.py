"""The comparison grid: detect cells over backbones, label fractions, modes and seeds, and its report."""
