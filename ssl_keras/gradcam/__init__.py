"""Grad-CAM of trained detectors: heatmaps, mass inside the box, and the `gradcam` command."""
