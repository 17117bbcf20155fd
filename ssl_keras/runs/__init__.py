"""Run machinery every command shares: configs, run directories and atomic writes, resumable fit,
callbacks, export and worker processes."""
