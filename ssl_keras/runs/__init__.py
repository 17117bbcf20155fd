"""Run machinery every command shares: configs, run directories and atomic writes, the run skeleton, resumable fit,
callbacks, export and worker processes."""
