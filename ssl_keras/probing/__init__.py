"""Linear and k-NN probes of a backbone's features (the `probe` command and the pretraining monitor)."""
