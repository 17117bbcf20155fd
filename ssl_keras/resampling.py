"""Separable resampling of image batches by matrix products, shared by the two augmenters.

A separable operator (a resize, a blur, a crop-and-zoom) is one matrix per image and axis; two
`transposed_matmul` calls apply it to rows and columns. Matrix products in `keras.ops` keep the
augmenters backend-neutral (no `tf.image`).
"""

from keras import ops


def transposed_matmul(matrices, images):
    """Applies [N, A, A] matrices along axis 1 of [N, A, B, C] images; returns [N, B, A, C].

    Two calls apply a separable operator to both spatial axes and restore the layout.
    """
    shape = ops.shape(images)
    batch, rows, columns, channels = shape[0], shape[1], shape[2], shape[3]
    x = ops.matmul(matrices, ops.reshape(images, (batch, rows, -1)))
    x = ops.reshape(x, (batch, rows, columns, channels))
    return ops.transpose(x, (0, 2, 1, 3))
