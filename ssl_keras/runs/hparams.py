"""TensorBoard HParams logs: a grid of runs as one table of hyperparameters and final metrics.

`tensorboard --logdir LOGS` then shows every run as a row of the HParams view (table, parallel
coordinates, scatter plots), where the grid can be filtered and sorted by any column.

Layout (what the HParams plugin reads):

```
LOGS/events...             the experiment: each hyperparameter's values, the metric columns
LOGS/{session}/events...   one folder per run: its hyperparameters, its metrics at step 0
```

Writing summaries needs TensorFlow (`tf.summary`), imported when called, as
`keras.callbacks.TensorBoard` does.
"""

import os
import shutil

from ssl_keras.runs.run_directory import replace_path_atomic


def write_hparams_logs(logs_dir, sessions, *, hparams, metrics, metric_titles=None):
    """Writes `logs_dir` afresh: the experiment summary and one session folder per run.

    The folder is written under a temporary name and moved into place when complete, so that
    writing it again (a grid continued later) replaces the older sessions instead of adding
    duplicates beside them.

    Args:
        logs_dir: the folder to write.
        sessions: list of `(name, {hparam: value}, {metric: value})`, one per run. `name` is the
            session's folder under `logs_dir` ("/"-separated) and its name in TensorBoard. A
            metric that is None or missing is not written for that session.
        hparams: `{name: list of values}`, the hyperparameters in column order with the values
            the grid can take (each list of one type: strings, numbers or booleans; TensorBoard
            keeps them sorted).
        metrics: list of metric names (the scalar tags), in column order.
        metric_titles: None, or `{metric: display name}`. Defaults to the names themselves.

    Returns:
        `logs_dir`.

    Example:

    >>> write_hparams_logs("runs/compare/logs",
    ...                    [("ssl/seed0", {"backbone": "ssl", "seed": 0}, {"mean_iou": 0.61})],
    ...                    hparams={"backbone": ["ssl", "scratch"], "seed": [0, 1]},
    ...                    metrics=["mean_iou"])
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    metric_titles = metric_titles or {}
    logs_dir = os.path.abspath(os.fspath(logs_dir))
    tmp = logs_dir + ".partial"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    columns = {name: hp.HParam(name, hp.Discrete(list(values))) for name, values in hparams.items()}
    _write_summaries(
        tf,
        tmp,
        lambda: hp.hparams_config(
            hparams=list(columns.values()),
            metrics=[hp.Metric(m, display_name=metric_titles.get(m, m)) for m in metrics],
        ),
    )
    for name, values, results in sessions:

        def session(name=name, values=values, results=results):
            hp.hparams({columns[key]: value for key, value in values.items()}, trial_id=name)
            for metric in metrics:
                if results.get(metric) is not None:
                    tf.summary.scalar(metric, float(results[metric]), step=0)

        _write_summaries(tf, os.path.join(tmp, *name.split("/")), session)
    replace_path_atomic(tmp, logs_dir)
    return logs_dir


def _write_summaries(tf, folder, write):
    """Runs `write()` with a summary writer on `folder` as the default, then closes it."""
    writer = tf.summary.create_file_writer(folder)
    try:
        with writer.as_default():
            write()
    finally:
        writer.close()
