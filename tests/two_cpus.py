"""Runs `ssl-keras ARGS...` with the CPU split into two logical TensorFlow devices (issue 15).

`python tests/two_cpus.py pretrain --distribute mirrored ...` gives a 2-replica
`MirroredStrategy` on a machine without accelerators. The devices must be configured before
TensorFlow starts, so this happens before the CLI is imported.
"""

import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from ssl_keras.cli.main import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
