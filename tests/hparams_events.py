"""Reads TensorBoard HParams logs back, as the HParams plugin sees them (tests only)."""

import os

import tensorflow as tf
from tensorboard.plugins.hparams import plugin_data_pb2


def _values(value):
    kind = value.WhichOneof("kind")
    return getattr(value, kind)


def read_hparams_logs(logs_dir):
    """`(experiment, sessions, event_files)` of an HParams logs folder.

    `experiment` is `{"hparams": {name: [values]}, "metrics": {tag: display name}}` (None when
    no experiment summary is found); `sessions` maps each session's name to
    `{"folder": relative folder, "hparams": {name: value}, "metrics": {tag: value}}`;
    `event_files` maps each folder to how many event files it holds.
    """
    experiment, sessions, event_files = None, {}, {}
    for root, _, files in sorted(os.walk(logs_dir)):
        folder = os.path.relpath(root, logs_dir).replace(os.sep, "/")
        files = [f for f in files if f.startswith("events.out.tfevents")]
        if files:
            event_files[folder] = len(files)
        session, scalars = None, {}
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    plugin = value.metadata.plugin_data.plugin_name
                    if plugin == "scalars":
                        scalars[value.tag] = float(tf.make_ndarray(value.tensor))
                    elif plugin == "hparams":
                        data = plugin_data_pb2.HParamsPluginData.FromString(
                            value.metadata.plugin_data.content
                        )
                        if data.HasField("experiment"):
                            experiment = {
                                "hparams": {
                                    info.name: [_values(v) for v in info.domain_discrete.values]
                                    for info in data.experiment.hparam_infos
                                },
                                "metrics": {
                                    info.name.tag: info.display_name
                                    for info in data.experiment.metric_infos
                                },
                            }
                        elif data.HasField("session_start_info"):
                            info = data.session_start_info
                            session = info.group_name
                            hparams = {k: _values(v) for k, v in info.hparams.items()}
        if session is not None:
            sessions[session] = {"folder": folder, "hparams": hparams, "metrics": scalars}
    return experiment, sessions, event_files
