"""Experiments: pretraining stages followed by a comparison, their report, labels saved, and the demo."""
