"""Data sources: tf.data pipelines over image folders, VOC, TFDS and the embedded synthetic set."""
