"""Grad-CAM for `BoxRegressor`: where in the image a backbone looks for its prediction.

Grad-CAM weights the channels of a late convolutional feature map `A` by the spatial mean of
the gradient of a score with respect to them, and keeps the positive part:

```
alpha_k = mean_ij dS / dA_ij^k          heatmap = ReLU(sum_k alpha_k A^k)
```

upsampled (bilinear) to the image and divided by its maximum, so each heatmap lies in
[0, 1] (a map with no positive evidence stays all zero). Upsampling places each cell at the
centre of its receptive field, traced through the backbone's strides and paddings
(`feature_geometry`): when every strided layer sees an even size, TensorFlow-style padding
puts cell `i` of a stride-`S` map at pixel `S i + S - 1`, not at the `S i + (S - 1) / 2` a
plain resize assumes.

The backbone of a `BoxRegressor` is a nested model, and a sub-model from the regressor's
input to a layer *inside* the backbone fails with "Graph disconnected". So the feature map is
read from a model built inside the backbone's own graph, `backbone input -> [A, pooled
features]` (recursing through wrapped backbones, e.g. `build_backbone`'s rescaling wrapper),
and the regressor's public `head` is called on the backbone output, as the regressor's own
`call` does.

To put a number on "looks at the whole object", `inbox_mass` measures the share of a
heatmap inside the ground-truth box (pixels cut by the box count by covered area), against
`box_area_share`, what a flat map would get; `gradcam_mass_summary` averages it over a
run's test split and `gradcam_across_backbones` compares runs on the same images.

This is an analysis tool, not model code: the gradient is taken with the backend's own
autodiff (`tf.GradientTape` on TensorFlow, `torch.autograd` on PyTorch); JAX is not supported.

References:
    - [Selvaraju et al., 2017](https://arxiv.org/abs/1610.02391)
"""

import os

import keras
import numpy as np
from PIL import Image

from ssl_keras.resampling import interpolation_matrix
from ssl_keras.runs.run_directory import make_directory, save_png_atomic, write_json_atomic

TARGETS = ("class", "box")
"""`"class"`: the logit of the predicted (or given) class. `"box"`: the evidence that makes the
predicted box large: the raw (pre-sigmoid) height + width outputs of the pooled head, the
predicted height + width of the spatial head."""

_MAX_LISTED_CANDIDATES = 12


class GradCAMError(ValueError):
    """Grad-CAM cannot be computed as asked (unknown layer, unsupported model or backend)."""


# Feature layers.


def _is_graph_model(layer):
    """Functional or Sequential model (has a symbolic graph we can read outputs from)."""
    if not isinstance(layer, keras.Model):
        return False
    try:
        return bool(layer.inputs) and bool(layer.outputs)
    except (AttributeError, ValueError):
        return False


def _output(layer):
    try:
        return layer.output
    except (AttributeError, ValueError):
        return None  # Never called, or shared (several inbound nodes): no single output.


def _spatial_ok(shape):
    if len(shape) != 4:
        return False
    return not all(d is not None and d <= 1 for d in shape[1:3])


def feature_layer_candidates(backbone):
    """Layers of a backbone that Grad-CAM can use, in graph order.

    A candidate outputs a 4-D feature map `[N, h, w, C]` whose spatial size is not known to be
    1 x 1. Nested functional models are searched too; their layers are named by path,
    `"outer/inner"` (e.g. `"efficientnetb0/top_activation"`).

    Args:
        backbone: a functional or Sequential `keras.Model`.

    Returns:
        A list of str layer paths; the last one is the automatic choice of `GradCAM`.
    """
    if not _is_graph_model(backbone):
        raise GradCAMError(
            f"Grad-CAM needs a functional or Sequential backbone whose layers can be read; "
            f"{type(backbone).__name__} {getattr(backbone, 'name', '')!r} is a subclassed model. "
            "Build the backbone with the functional API (as `build_backbone` does)"
        )
    return [path for path, _ in _walk(backbone, "")]


def _walk(model, prefix):
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = prefix + layer.name
        if _is_graph_model(layer):
            yield from _walk(layer, path + "/")
        output = _output(layer)
        if (
            output is not None
            and not isinstance(output, (list, tuple, dict))
            and _spatial_ok(output.shape)
        ):
            yield path, layer


def _resolve_layer(backbone, layer_name):
    candidates = feature_layer_candidates(backbone)
    if not candidates:
        raise GradCAMError(
            f"backbone {backbone.name!r} has no layer with a 4-D feature map larger than 1x1 "
            "(Grad-CAM needs a convolutional feature map)"
        )
    if layer_name is None:
        return candidates[-1]
    matches = [c for c in candidates if c == layer_name or c.rsplit("/", 1)[-1] == layer_name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise GradCAMError(
            f"layer_name {layer_name!r} is ambiguous in backbone {backbone.name!r}; "
            f"use one of the paths {', '.join(matches)}"
        )
    shown = candidates[-_MAX_LISTED_CANDIDATES:]
    more = len(candidates) - len(shown)
    listed = ", ".join(shown) + (f" (and {more} earlier ones)" if more else "")
    raise GradCAMError(
        f"layer_name {layer_name!r} is not a 4-D feature-map layer of backbone {backbone.name!r}; "
        f"candidates (last = automatic choice): {listed}. Received: layer_name={layer_name!r}"
    )


def _single(tensors):
    return tensors[0] if isinstance(tensors, (list, tuple)) and len(tensors) == 1 else tensors


def _feature_model(model, path):
    """A model `model input -> [feature map at path, model output]`, inside `model`'s graph."""
    name, _, rest = path.partition("/")
    layer = model.get_layer(name)
    if not rest:
        return keras.Model(_single(model.inputs), [layer.output, _single(model.outputs)])
    inner = _feature_model(layer, rest)
    captured = []

    def call_function(operation, *args, **kwargs):
        # The nested model is replaced by its two-output twin; the map is kept aside.
        if operation is layer:
            feature_map, output = inner(*args, **kwargs)
            captured.append(feature_map)
            return output
        return operation(*args, **kwargs)

    # clone_function=identity: the clone shares every layer (and weight) with the original.
    clone = keras.models.clone_model(model, clone_function=lambda l: l, call_function=call_function)
    if len(captured) != 1:
        raise GradCAMError(
            f"layer {path!r}: the nested model {name!r} is called {len(captured)} times "
            "in the backbone; Grad-CAM needs it called once"
        )
    return keras.Model(_single(clone.inputs), [captured[0], _single(clone.outputs)])


# Geometry: where each feature-map cell sits in the image.


class _NoGeometry(Exception):
    pass


def _walk_back(tensor):
    """Operations from `tensor` back to its model input along first inputs, nested models opened.

    Reads Keras's graph records (`_keras_history`, `_inbound_nodes`); any surprise gives up.
    """
    operations = []
    while True:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            raise _NoGeometry("tensor without graph history")
        operation, node_index, tensor_index = history
        if isinstance(operation, keras.layers.InputLayer):
            return operations
        if _is_graph_model(operation):
            operations.extend(_walk_back(keras.tree.flatten(operation.outputs)[tensor_index]))
        else:
            operations.append(operation)
        inputs = operation._inbound_nodes[node_index].input_tensors
        if not inputs:
            raise _NoGeometry(f"{operation.name} has no input tensor")
        tensor = inputs[0]


_SHAPE_KEEPING = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Rescaling,
    keras.layers.Normalization,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.Add,
    keras.layers.Multiply,
    keras.layers.Concatenate,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
_SPATIAL_CHANGING = (
    keras.layers.UpSampling2D,
    keras.layers.Conv2DTranspose,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Resizing,
)


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _layer_geometry(layer, size):
    """`(stride, offset, output size)` of one axis pair: input index = stride * output index + offset."""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _NoGeometry(f"{layer.name} is channels_first")
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (top, bottom), (left, right) = layer.padding
        return (1, 1), (-top, -left), (size[0] + top + bottom, size[1] + left + right)
    if isinstance(layer, keras.layers.Cropping2D):
        (top, bottom), (left, right) = layer.cropping
        return (1, 1), (top, left), (size[0] - top - bottom, size[1] - left - right)
    if isinstance(
        layer,
        (
            keras.layers.Conv2D,
            keras.layers.DepthwiseConv2D,
            keras.layers.SeparableConv2D,
            keras.layers.MaxPooling2D,
            keras.layers.AveragePooling2D,
        ),
    ) and not isinstance(layer, keras.layers.Conv2DTranspose):
        kernel = _pair(getattr(layer, "kernel_size", None) or layer.pool_size)
        strides = _pair(layer.strides if layer.strides is not None else kernel)
        dilation = _pair(getattr(layer, "dilation_rate", 1))
        strides_out, offsets, sizes = [], [], []
        for n, k, s, r in zip(size, kernel, strides, dilation):
            extent = (k - 1) * r + 1
            if layer.padding == "same":
                out = -(-n // s)
                top = (
                    max((out - 1) * s + extent - n, 0) // 2
                )  # TensorFlow's rule: extra pixel at the end
            elif layer.padding == "valid":
                out, top = (n - extent) // s + 1, 0
            else:
                raise _NoGeometry(f"{layer.name} has padding {layer.padding!r}")
            strides_out.append(s)
            offsets.append((extent - 1) / 2 - top)
            sizes.append(out)
        return tuple(strides_out), tuple(offsets), tuple(sizes)
    if isinstance(layer, _SPATIAL_CHANGING):
        raise _NoGeometry(f"{layer.name} changes the spatial size in a way not tracked")
    return (1, 1), (0, 0), size  # element-wise and channel-wise layers (_SHAPE_KEEPING and alike)


def feature_geometry(feature_tensor, image_hw):
    """Where the cells of a feature map sit in the input image.

    Follows the graph from the feature map back to the input and composes each layer's stride
    and padding (TensorFlow's "same" puts the odd padding pixel at the end, and
    `keras.applications` pads explicitly with `ZeroPadding2D`), so cell `i` is centred on input
    pixel index `stride * i + offset`. For a stride-2 3x3 "same" convolution on an even input
    this is `2 i + 1`, half a pixel right of a plain resize's `2 i + 0.5`; three such layers
    already shift a resized heatmap by 3.5 pixels, EfficientNets' five by about 15.

    Args:
        feature_tensor: a symbolic `KerasTensor`, the feature map.
        image_hw: `(height, width)` of the input image.

    Returns:
        A dict with `"stride"`, `"offset"` and `"size"` (the expected feature-map size), each a
        `(y, x)` pair; or None when the graph holds a layer whose geometry is not tracked.
    """
    try:
        operations = _walk_back(feature_tensor)
        stride, offset, size = [1, 1], [0.0, 0.0], tuple(int(v) for v in image_hw)
        for layer in reversed(operations):
            s, d, size = _layer_geometry(layer, size)
            for axis in range(2):
                offset[axis] += d[axis] * stride[axis]
                stride[axis] *= s[axis]
    except (_NoGeometry, AttributeError, IndexError, TypeError, ValueError):
        return None
    return {"stride": tuple(stride), "offset": tuple(offset), "size": tuple(size)}


def _upsample(maps, image_hw, geometry):
    """Bilinear upsampling of `[N, h, w]` maps to the image, cell centres placed by `geometry`
    (None: a plain half-pixel resize, as `tf.image.resize`)."""
    matrices = []
    for axis, (n_out, n_in) in enumerate(zip(image_hw, maps.shape[1:])):
        pixels = np.arange(n_out, dtype="float64")
        if geometry is None:
            positions = (pixels + 0.5) * n_in / n_out - 0.5
        else:
            positions = (pixels - geometry["offset"][axis]) / geometry["stride"][axis]
        # Clamped: past the outermost cell centres the border cell is repeated, as `tf.image.resize` does.
        matrices.append(
            keras.ops.convert_to_numpy(interpolation_matrix(positions, n_in, fill_mode="nearest"))
        )
    return np.einsum("Yh,nhw,Xw->nYX", matrices[0], maps, matrices[1]).astype("float32")


# Gradients.


def _head(model, features):
    """`(box_evidence [N], boxes [N, 4], logits [N, C])` of the model's head on backbone features.

    The box evidence is the head's own `size_score` (`box_heads.py`): what makes the predicted
    box large, the raw (pre-sigmoid) height + width outputs of the pooled head, the predicted
    height + width of the spatial head.
    """
    boxes, logits, size_score = model.head(features, training=False, return_size_score=True)
    return size_score, boxes, logits


def _score(target, box_evidence, logits, class_index):
    if target == "box":
        return keras.ops.sum(box_evidence)
    one_hot = keras.ops.one_hot(
        keras.ops.convert_to_tensor(class_index, "int32"), keras.ops.shape(logits)[-1]
    )
    return keras.ops.sum(logits * one_hot)


def _resolve_class_index(class_index, logits):
    if class_index is None:
        return np.argmax(logits, axis=-1).astype("int32")
    index = np.broadcast_to(np.asarray(class_index, "int32"), logits.shape[:1]).copy()
    if index.min() < 0 or index.max() >= logits.shape[-1]:
        raise GradCAMError(
            f"class_index must be in [0, {logits.shape[-1] - 1}] (the model has "
            f"{logits.shape[-1]} classes). Received: class_index={class_index}"
        )
    return index


def _gradients(feature_model, model, images, target, class_index):
    """Feature maps, their gradients, logits and raw box outputs of one batch, as NumPy."""
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(images, tf.float32)
        with tf.GradientTape() as tape:
            # Watching the input records every op, frozen (non-trainable) backbones included.
            tape.watch(x)
            feature_map, pooled = feature_model(x, training=False)
            box_evidence, boxes, logits = _head(model, pooled)
            index = _resolve_class_index(class_index, keras.ops.convert_to_numpy(logits))
            score = _score(target, box_evidence, logits, index)
        grads = tape.gradient(score, feature_map)
    elif backend == "torch":
        import torch

        x = keras.ops.convert_to_tensor(images, "float32").detach().requires_grad_(True)
        with torch.enable_grad():
            feature_map, pooled = feature_model(x, training=False)
            box_evidence, boxes, logits = _head(model, pooled)
            index = _resolve_class_index(class_index, keras.ops.convert_to_numpy(logits))
            score = _score(target, box_evidence, logits, index)
            grads = torch.autograd.grad(score, feature_map)[0]
    else:
        raise GradCAMError(
            f"Grad-CAM runs on the TensorFlow and PyTorch backends; set KERAS_BACKEND=tensorflow "
            f"(or torch). Received: backend={backend}"
        )
    to_np = lambda t: keras.ops.convert_to_numpy(keras.ops.cast(t, "float32"))
    return to_np(feature_map), to_np(grads), to_np(logits), to_np(boxes), index


def _normalize(maps):
    peak = maps.max(axis=(1, 2), keepdims=True)
    out = np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)


class GradCAM:
    """Grad-CAM heatmaps of a `BoxRegressor`, with the feature model built once.

    Args:
        model: a `BoxRegressor`, or a model with a functional `backbone` and a `head` called as
            `head(features, training=False, return_size_score=True)` (see `box_heads.py`).
        layer_name: str or None, the backbone layer whose feature map is used: a layer name or a
            nested path (`"efficientnetb0/top_activation"`). Defaults to None: the last layer with
            a 4-D feature map larger than 1x1 (see `feature_layer_candidates`), e.g.
            `"top_activation"` for EfficientNets.

    Example:

    >>> cam = GradCAM(model)
    >>> result = cam.explain(images)           # images float [N, S, S, 3] in [0, 255]
    >>> result["heatmaps"].shape               # [N, S, S] in [0, 1]
    """

    def __init__(self, model, *, layer_name=None):
        missing = [a for a in ("backbone", "head") if not hasattr(model, a)]
        if missing:
            raise GradCAMError(
                f"Grad-CAM needs a BoxRegressor; {type(model).__name__} lacks {', '.join(missing)}"
            )
        self.model = model
        self.layer_name = _resolve_layer(model.backbone, layer_name)
        self.feature_model = _feature_model(model.backbone, self.layer_name)

    def explain(
        self, images, *, target="class", class_index=None, upsample=True, align=True, batch_size=32
    ):
        """Heatmaps and predictions for a batch of images.

        Args:
            images: float array `[N, H, W, 3]` in [0, 255], resized as the model was trained.
            target: `"class"` or `"box"` (see `TARGETS`). Defaults to `"class"`.
            class_index: None (each image's predicted class), an int, or ints `[N]`; used by
                `target="class"`. Defaults to None.
            upsample: bool, whether heatmaps are resized (bilinear) to `[H, W]`; if False they
                keep the feature map's `[h, w]`. Defaults to True.
            align: bool, whether upsampling puts each cell where its receptive field is centred
                (`feature_geometry`); a plain resize shifts the map up-left by about
                `(stride - 1) / 2` pixels with TensorFlow-style padding. Falls back to a plain
                resize when the geometry cannot be traced. Defaults to True.
            batch_size: int, images per gradient pass. Defaults to 32.

        Returns:
            A dict: `"heatmaps"` float32 `[N, H, W]` in [0, 1]; `"class_index"` int32 `[N]`
            (the explained class); `"class_probs"` float32 `[N, C]`; `"boxes"` float32
            `[N, 4]` rel_yxyx; `"layer"` str; `"geometry"`, the `feature_geometry` dict used to
            upsample, or None (plain resize).
        """
        if target not in TARGETS:
            raise GradCAMError(
                f"target must be one of {', '.join(TARGETS)}. Received: target={target!r}"
            )
        images = np.asarray(images, dtype="float32")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise GradCAMError(
                f"images must be [N, H, W, 3] floats in [0, 255]. Received: shape={images.shape}"
            )
        if not self.model.built:
            self.model.build((None,) + images.shape[1:])
        per_image_index = (
            None
            if class_index is None
            else np.broadcast_to(np.asarray(class_index, "int32"), images.shape[:1])
        )
        maps, indices, probs, boxes = [], [], [], []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            index = None if per_image_index is None else per_image_index[start : start + batch_size]
            feature_map, grads, logits, box_batch, index = _gradients(
                self.feature_model, self.model, chunk, target, index
            )
            if feature_map.shape[1] * feature_map.shape[2] <= 1:
                raise GradCAMError(
                    f"layer {self.layer_name!r} gives a 1x1 feature map for {chunk.shape[1]}x{chunk.shape[2]} "
                    "images, so the heatmap would be flat; use larger images or an earlier layer "
                    f"(candidates: {', '.join(feature_layer_candidates(self.model.backbone)[-6:])})"
                )
            alpha = grads.mean(axis=(1, 2))  # [n, C]
            maps.append(np.maximum(np.einsum("nhwc,nc->nhw", feature_map, alpha), 0.0))
            indices.append(index)
            probs.append(keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1)))
            boxes.append(box_batch)
        maps = np.concatenate(maps).astype("float32")
        geometry = None
        if upsample:
            if align:
                geometry = feature_geometry(self.feature_model.outputs[0], images.shape[1:3])
                if geometry is not None and geometry["size"] != maps.shape[1:]:
                    geometry = None  # an untracked layer changed the size: trust nothing
            maps = _upsample(maps, images.shape[1:3], geometry)
        return {
            "heatmaps": _normalize(np.maximum(maps, 0.0)).astype("float32"),
            "class_index": np.concatenate(indices).astype("int32"),
            "class_probs": np.concatenate(probs).astype("float32"),
            "boxes": np.concatenate(boxes).astype("float32"),
            "layer": self.layer_name,
            "geometry": geometry,
        }

    def __call__(self, images, **kwargs):
        return self.explain(images, **kwargs)["heatmaps"]


def gradcam(
    model, images, *, target="class", class_index=None, layer_name=None, upsample=True, align=True
):
    """Grad-CAM heatmaps of a `BoxRegressor` for a batch of images.

    Args:
        model: a `BoxRegressor`.
        images: float array `[N, H, W, 3]` in [0, 255], resized as the model was trained.
        target: `"class"` (the class logit) or `"box"` (raw box height + width outputs).
            Defaults to `"class"`.
        class_index: None (predicted class), an int or ints `[N]`. Defaults to None.
        layer_name: str or None, the feature layer (see `GradCAM`). Defaults to None
            (automatic: the last 4-D feature map, e.g. `"top_activation"`).
        upsample: bool, resize heatmaps to `[H, W]`. Defaults to True.
        align: bool, place cells at their receptive-field centres when upsampling (see
            `GradCAM.explain`). Defaults to True.

    Returns:
        float32 array `[N, H, W]` in [0, 1].

    Example:

    >>> heatmaps = gradcam(model, images)
    >>> overlay(images[0].astype("uint8"), heatmaps[0])
    """
    return GradCAM(model, layer_name=layer_name).explain(
        images, target=target, class_index=class_index, upsample=upsample, align=align
    )["heatmaps"]


# Pictures.


def _resize_map(heatmap, height, width):
    heatmap = np.asarray(heatmap, dtype="float32")
    if heatmap.shape == (height, width):
        return heatmap
    return np.asarray(Image.fromarray(heatmap, mode="F").resize((width, height), Image.BILINEAR))


def heatmap_to_original(heatmap, original_hw, image_size, resize):
    """Maps a heatmap of the resized `S x S` model input back onto the original image.

    Args:
        heatmap: float array `[S, S]`.
        original_hw: `(height, width)` of the original image.
        image_size: int, `S`.
        resize: `"stretch"` or `"letterbox"` (the padding is cropped away first).

    Returns:
        float32 array `[height, width]`.
    """
    from ssl_keras.data.localization import letterbox_geometry

    height, width = (int(v) for v in original_hw)
    heatmap = np.asarray(heatmap, dtype="float32")
    if resize == "letterbox":
        new_h, new_w, top, left = (int(v) for v in letterbox_geometry((height, width), image_size))
        heatmap = heatmap[top : top + new_h, left : left + new_w]
    elif resize != "stretch":
        raise ValueError(f"`resize` must be 'stretch' or 'letterbox'. Received: resize={resize!r}")
    return _resize_map(heatmap, height, width)


def overlay(image, heatmap, *, alpha=0.45, colormap="jet"):
    """Blends a heatmap, coloured with a matplotlib colormap, over an image.

    Args:
        image: uint8 array `[H, W, 3]` (or `[H, W]` grayscale).
        heatmap: float array in [0, 1], `[H, W]` or any size (resized bilinearly).
        alpha: float in [0, 1], the heatmap's weight. Defaults to 0.45.
        colormap: str, a matplotlib colormap name. Defaults to `"jet"`.

    Returns:
        uint8 array `[H, W, 3]`.
    """
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"`image` must be [H, W, 3] (or [H, W]). Received: shape={image.shape}")
    heatmap = np.asarray(heatmap, dtype="float32")
    if heatmap.ndim != 2:
        raise ValueError(f"`heatmap` must be [H, W]. Received: shape={heatmap.shape}")
    heat = np.clip(np.nan_to_num(_resize_map(heatmap, *image.shape[:2])), 0.0, 1.0)
    colors = matplotlib.colormaps[colormap](heat)[..., :3] * 255.0
    blended = (1.0 - alpha) * np.clip(image.astype("float32"), 0, 255) + alpha * colors
    return np.clip(np.round(blended), 0, 255).astype("uint8")


def gradcam_grid(
    image_rows, *, titles=None, column_titles=None, path=None, tile_inches=2.0, dpi=100
):
    """The comparison figure: one row per image, one column per view (original, then models).

    Args:
        image_rows: list of rows, each a list of uint8 `[H, W, 3]` images (the same number per
            row; sizes may differ).
        titles: optional list of rows of str, a caption per cell (e.g. the predicted class).
        column_titles: optional list of str, shown above the first row (e.g. model names).
        path: optional str, where the PNG is written (through a temporary file).
        tile_inches: float, side of one cell in inches. Defaults to 2.0.
        dpi: int, dots per inch. Defaults to 100.

    Returns:
        uint8 array `[H, W, 3]`, the rendered figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [list(row) for row in image_rows]
    if not rows or not rows[0]:
        raise ValueError(
            "`image_rows` must hold at least one non-empty row. Received: image_rows=[]"
        )
    ncols = len(rows[0])
    if any(len(row) != ncols for row in rows):
        raise ValueError(
            f"every row needs {ncols} images. Received: row lengths {[len(r) for r in rows]}"
        )
    if titles is not None and (len(titles) != len(rows) or any(len(r) != ncols for r in titles)):
        raise ValueError(
            f"`titles` must give one caption per cell ({len(rows)} rows of {ncols}). "
            f"Received: row lengths {[len(r) for r in titles]}"
        )
    if column_titles is not None and len(column_titles) != ncols:
        raise ValueError(
            f"`column_titles` must give {ncols} titles. Received: {len(column_titles)}"
        )
    figure = Figure(figsize=(tile_inches * ncols, tile_inches * len(rows) + 0.3), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), ncols, squeeze=False)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            ax = axes[i][j]
            ax.imshow(np.asarray(image))
            ax.set_axis_off()
            lines = []
            if i == 0 and column_titles is not None:
                lines.append(str(column_titles[j]))
            if titles is not None and titles[i][j]:
                lines.append(str(titles[i][j]))
            if lines:
                ax.set_title("\n".join(lines), fontsize=8)
    figure.tight_layout()
    canvas.draw()
    grid = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if path is not None:
        save_png_atomic(grid, path)
    return grid


# In-box mass: how much of a heatmap falls on the object.


def _check_boxes(box, name):
    box = np.asarray(box, dtype="float64")
    if box.shape[-1:] != (4,) or box.ndim not in (1, 2):
        raise ValueError(
            f"`{name}` must be one (ymin, xmin, ymax, xmax) box [4] or boxes [N, 4]. "
            f"Received: {name} of shape {box.shape}"
        )
    if not np.isfinite(box).all():
        raise ValueError(f"`{name}` must be finite. Received: {name}={box.tolist()}")
    flipped = (box[..., 2] < box[..., 0]) | (box[..., 3] < box[..., 1])
    if flipped.any():
        first = box.reshape(-1, 4)[int(np.flatnonzero(flipped.reshape(-1))[0])]
        raise ValueError(
            f"`{name}` must be (ymin, xmin, ymax, xmax) with ymin <= ymax and xmin <= xmax; "
            f"is it in (xmin, ymin, xmax, ymax) order? Received: box {first.tolist()}"
        )
    return box


def _coverage(low, high, size):
    """`[N, size]`: the covered fraction of each of `size` unit pixels by `[low, high]` (normalised)."""
    edges = np.arange(size + 1, dtype="float64")
    low = np.clip(low[:, None] * size, 0.0, size)
    high = np.clip(high[:, None] * size, 0.0, size)
    return np.clip(np.minimum(high, edges[None, 1:]) - np.maximum(low, edges[None, :-1]), 0.0, 1.0)


def box_area_share(box):
    """The share of the image a normalised box covers: the in-box mass of a flat heatmap.

    The part of a box outside `[0, 1]` is cut off first, so the result is exactly
    `inbox_mass` of a uniform heatmap, the chance level of an attention map that does not
    look at the object.

    Args:
        box: float array `[4]` (one box) or `[N, 4]`, normalised `(ymin, xmin, ymax, xmax)`.

    Returns:
        A float for one box, or float64 array `[N]`, in [0, 1].

    Example:

    >>> box_area_share([0.25, 0.0, 0.75, 0.5])
    0.25
    """
    box = np.clip(_check_boxes(box, "box"), 0.0, 1.0)
    share = (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
    return float(share) if box.ndim == 1 else share


def inbox_mass(heatmap, box):
    """The fraction of a non-negative heatmap's total mass that lies inside a box.

    Pixel `(i, j)` of an `H x W` map covers `[i / H, (i + 1) / H] x [j / W, (j + 1) / W]` in
    normalised coordinates (the convention of `draw_boxes` and of the data pipeline's boxes),
    and a pixel the box cuts counts with the covered share of its area:

    ```
    mass = sum_ij cover_ij * heatmap_ij / sum_ij heatmap_ij
    ```

    so a uniform heatmap gets exactly `box_area_share(box)`, and a map that is zero outside
    a pixel-aligned box gets exactly 1. The part of a box outside the image is ignored.

    Args:
        heatmap: float array `[H, W]`, or `[N, H, W]` for a batch, non-negative (e.g.
            Grad-CAM maps in [0, 1]).
        box: float array `[4]` for one map, `[N, 4]` for a batch: normalised
            `(ymin, xmin, ymax, xmax)` in the heatmap's frame.

    Returns:
        A float in [0, 1] for one map, or float64 array `[N]`. A map whose total is zero
        (all-zero: Grad-CAM found no positive evidence) has no defined share and gives NaN;
        callers count those apart (as `gradcam_mass_summary` does).

    Raises:
        ValueError: the heatmap has negative or non-finite values, the shapes do not match,
            or a box has ymin > ymax or xmin > xmax.

    Example:

    >>> inbox_mass(np.ones((4, 4)), [0.125, 0.0, 0.625, 1.0])   # flat map: the box's area share
    0.5
    >>> heatmap = np.zeros((4, 4)); heatmap[1:3, 1:3] = 1.0
    >>> inbox_mass(heatmap, [0.25, 0.25, 0.75, 0.75])
    1.0
    """
    heatmap = np.asarray(heatmap, dtype="float64")
    box = _check_boxes(box, "box")
    single = heatmap.ndim == 2
    if single:
        heatmap = heatmap[None]
    if heatmap.ndim != 3:
        raise ValueError(
            f"`heatmap` must be [H, W] or [N, H, W]. Received: heatmap of shape {heatmap.shape}"
        )
    boxes = box.reshape(-1, 4)
    if (single and box.ndim != 1) or (not single and (box.ndim != 2 or len(boxes) != len(heatmap))):
        expected = "[4]" if single else f"[{len(heatmap)}, 4]"
        raise ValueError(
            f"`box` must be {expected} for heatmaps of shape {heatmap.shape[int(single) :]}. "
            f"Received: box of shape {box.shape}"
        )
    if not np.isfinite(heatmap).all():
        raise ValueError("`heatmap` must be finite; replace NaN/inf (e.g. np.nan_to_num) first")
    if heatmap.size and heatmap.min() < 0.0:
        raise ValueError(
            f"`heatmap` must be non-negative (mass is a share of the total); clip it "
            f"(np.maximum(heatmap, 0)) first. Received: minimum {heatmap.min():.4g}"
        )
    rows = _coverage(boxes[:, 0], boxes[:, 2], heatmap.shape[1])
    cols = _coverage(boxes[:, 1], boxes[:, 3], heatmap.shape[2])
    inside = np.einsum("nh,nhw,nw->n", rows, heatmap, cols)
    total = heatmap.sum(axis=(1, 2))
    mass = np.full(len(heatmap), np.nan)
    np.divide(inside, total, out=mass, where=total > 0)
    mass = np.clip(mass, 0.0, 1.0)  # rounding only; NaN stays NaN
    return float(mass[0]) if single else mass


# Command.


def _output_names(image_paths, num_models):
    taken, stems = set(), []
    for path in image_paths:
        stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem}_{n}"
        taken.add(name)
        stems.append(name)
    return stems, [[f"gradcam_{stem}_{m}.png" for m in range(num_models)] for stem in stems]


def run_gradcam(
    model_dirs, image_paths, out, *, target="class", layer_name=None, model_titles=None
):
    """Grad-CAM overlays of several detect runs on the same images, and the comparison grid.

    Each image is read with `read_rgb`, resized as each run was trained (its `image_size` and
    `resize`), explained, and the heatmap is mapped back onto the original image. Writes
    `out/gradcam_<stem>_<model index>.png` (model index = position in `model_dirs`, from 0)
    and `out/gradcam_grid.png` (rows = images; columns = the original, then one overlay per
    model, captioned with the predicted class and its probability). Existing files are never
    overwritten: if any output exists, nothing is done.

    Args:
        model_dirs: list of finished `ssl-keras detect` run directories.
        image_paths: list of image files (any format Pillow reads).
        out: output folder, created if missing.
        target: `"class"` or `"box"` (see `TARGETS`). Defaults to `"class"`.
        layer_name: str or None, the feature layer (see `GradCAM`); None picks it per model.

    Returns:
        A dict: `"grid"` (path), `"layers"` (the layer used per model) and `"overlays"`, a list
        of dicts with image, model, output, class, score.
    """
    from ssl_keras.data.localization import resize_example
    from ssl_keras.localization.detect import load_run
    from ssl_keras.localization.predict import read_rgb

    model_dirs, image_paths, out, stems, names = _check_gradcam_inputs(
        model_dirs, image_paths, out, target
    )
    images = [read_rgb(p) for p in image_paths]  # every input is checked before any work
    make_directory(out)

    rows = [[image] for image in images]
    titles = [[stem] for stem in stems]
    overlays, layers, column_titles = [], [], ["image"]
    for m, run_dir in enumerate(model_dirs):
        model, record = load_run(run_dir)
        options, class_names = record["options"], record["resolved"]["class_names"]
        size, resize = int(options["image_size"]), options["resize"]
        batch = np.stack(
            [
                np.asarray(
                    resize_example(image, np.zeros(4, "float32"), image_size=size, resize=resize)[0]
                )
                for image in images
            ]
        )
        result = GradCAM(model, layer_name=layer_name).explain(batch, target=target)
        layers.append(result["layer"])
        column_titles.append(
            model_titles[m]
            if model_titles
            else f"model {m}: {os.path.basename(os.path.normpath(run_dir))}"
        )
        for i, (path, image) in enumerate(zip(image_paths, images)):
            heat = heatmap_to_original(result["heatmaps"][i], image.shape[:2], size, resize)
            drawn = overlay(image, heat)
            target_path = os.path.join(out, names[i][m])
            save_png_atomic(drawn, target_path)
            label = int(np.argmax(result["class_probs"][i]))
            score = float(result["class_probs"][i][label])
            rows[i].append(drawn)
            titles[i].append(f"{class_names[label]} {score:.2f}")
            overlays.append(
                {
                    "image": path,
                    "model": run_dir,
                    "output": target_path,
                    "class": class_names[label],
                    "score": score,
                    "layer": result["layer"],
                }
            )
        del model
    grid_path = os.path.join(out, "gradcam_grid.png")
    gradcam_grid(rows, titles=titles, column_titles=column_titles, path=grid_path)
    return {"grid": grid_path, "layers": layers, "overlays": overlays, "target": target}


def _check_gradcam_inputs(model_dirs, image_paths, out, target):
    """Checks `run_gradcam`'s runs, target and outputs before any work.

    Returns:
        `(model_dirs, image_paths, out, stems, names)`: the paths as strings, `out` absolute, and
        the output stems and file names from `_output_names`.
    """
    model_dirs = [os.fspath(d) for d in model_dirs]
    image_paths = [os.fspath(p) for p in image_paths]
    if not model_dirs:
        raise ValueError("run_gradcam needs at least one detect run directory (--model DIR)")
    if not image_paths:
        raise ValueError("run_gradcam needs at least one image file")
    if target not in TARGETS:
        raise GradCAMError(
            f"target must be one of {', '.join(TARGETS)}. Received: target={target!r}"
        )
    for run_dir in model_dirs:
        for name in ("config.json", "model.keras"):
            if not os.path.isfile(os.path.join(run_dir, name)):
                raise FileNotFoundError(
                    f"--model {run_dir}: {name} is missing; is it a finished detect run?"
                )
    out = os.path.abspath(os.fspath(out))
    stems, names = _output_names(image_paths, len(model_dirs))
    for name in [n for row in names for n in row] + ["gradcam_grid.png"]:
        if os.path.exists(os.path.join(out, name)):
            raise FileExistsError(
                f"--out {out}: {name} exists; choose a new --out (nothing was overwritten)"
            )
    return model_dirs, image_paths, out, stems, names


def _report_images(data, out_dir, num_images):
    """Held-out images for the comparison figure: VOC test images, or unseen synthetic scenes."""
    if data.startswith("voc:"):
        root = data[4:]
        from ssl_keras.data.voc import read_image_set

        ids = read_image_set(root, "test")[:num_images]
        return [os.path.join(root, "JPEGImages", f"{i}.jpg") for i in ids]
    if data.startswith("synthetic"):
        from PIL import Image

        from ssl_keras.data.synthetic import make_synthetic_scene

        folder = os.path.join(out_dir, "gradcam_inputs")
        make_directory(folder, what="the Grad-CAM input folder")
        paths = []
        for i in range(num_images):
            # Indices past any synthetic split: scenes no cell was trained or selected on.
            path = os.path.join(folder, f"scene_{100000 + i}.png")
            if not os.path.exists(path):
                Image.fromarray(make_synthetic_scene(100000 + i, image_size=128)[0]).save(path)
            paths.append(path)
        return paths
    return []


_SHORT_MODES = {"freeze": "frozen", "finetune": "fine-tuned", "freeze-then-finetune": "frozen+ft"}


def gradcam_for_report(out_dir, cell_dirs, *, data, num_images=3):
    """The compare report's figure: Grad-CAM of each backbone x mode on the same test images.

    Uses the first seed at the largest label fraction of every (backbone, mode). Returns the
    grid's path, or None when the data source has no image files to show (TFDS).
    """
    chosen = {}
    for (label, mode, fraction, seed), run_dir in sorted(
        cell_dirs.items(), key=lambda kv: (kv[0][3], -kv[0][2])
    ):
        chosen.setdefault((label, mode), (fraction, seed, run_dir))
    images = _report_images(data, out_dir, num_images)
    if not chosen or not images:
        return None
    keys = sorted(chosen)
    target = os.path.join(out_dir, "gradcam")
    if os.path.exists(os.path.join(target, "gradcam_grid.png")):
        return os.path.join(target, "gradcam_grid.png")
    result = run_gradcam(
        [chosen[k][2] for k in keys],
        images,
        target,
        model_titles=[f"{label}, {_SHORT_MODES.get(mode, mode)}" for label, mode in keys],
    )
    return result["grid"]


# In-box mass over a test split, and the same images across backbones.

EXPLAINED_CLASSES = ("predicted", "label")
"""Which class `target="class"` explains in the mass summaries: the model's prediction (as the
figures do) or the image's ground-truth label."""

MASS_FILE = "gradcam_mass.json"
"""The file `gradcam_across_backbones` writes in its output folder."""


def _check_targets(targets):
    targets = tuple(targets) if not isinstance(targets, str) else (targets,)
    if not targets or any(t not in TARGETS for t in targets) or len(set(targets)) != len(targets):
        raise GradCAMError(
            f"targets must be distinct values of {', '.join(TARGETS)}. Received: targets={targets!r}"
        )
    return targets


def _check_count(value, name):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(
            f"`{name}` must be an int >= 1 or None (all test images). Received: {name}={value!r}"
        )
    return value


def _load_test_split(spec, options, batch_size):
    from ssl_keras.data.localization import load_localization_data

    return load_localization_data(
        spec,
        image_size=int(options["image_size"]),
        batch_size=batch_size,
        resize=options["resize"],
        splits=("test",),
    )


def _finite_stats(values):
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    if not len(values):
        return None, None
    return float(values.mean()), float(values.std())


def _mass_pass(model, test, *, targets, num_images, keep, layer_name, batch_size, explained_class):
    """Streams the test split through Grad-CAM once: masses of the first `num_images` (None:
    all) and the images, boxes and heatmaps of the first `keep`, without holding the split."""
    cam = GradCAM(model, layer_name=layer_name)
    available = test.num_images["test"]
    count = available if num_images is None else min(num_images, available)
    keep = min(keep, available)
    wanted = max(count, keep)
    masses, shares = {t: [] for t in targets}, []
    kept = {"images": [], "boxes": [], "heatmaps": {t: [] for t in targets}}
    seen = 0
    for images, truth in test.test.as_numpy_iterator():
        if seen >= wanted:
            break
        images, boxes, labels = (
            np.asarray(a)[: wanted - seen] for a in (images, truth["boxes"], truth["labels"])
        )
        shares.append(box_area_share(boxes))
        room = max(keep - seen, 0)
        kept["images"].append(images[:room])
        kept["boxes"].append(boxes[:room])
        for t in targets:
            class_index = labels if t == "class" and explained_class == "label" else None
            heatmaps = cam.explain(
                images, target=t, class_index=class_index, batch_size=batch_size
            )["heatmaps"]
            masses[t].append(inbox_mass(heatmaps, boxes))
            kept["heatmaps"][t].append(heatmaps[:room])
        seen += len(images)
    masses = {t: np.concatenate(m) for t, m in masses.items()}
    kept = {
        "images": np.concatenate(kept["images"]),
        "boxes": np.concatenate(kept["boxes"]),
        "heatmaps": {t: np.concatenate(h) for t, h in kept["heatmaps"].items()},
        "masses": {t: m[:keep] for t, m in masses.items()},
        "image_ids": list(test.image_ids["test"][:keep]),
    }
    masses = {t: m[:count] for t, m in masses.items()}
    shares = np.concatenate(shares)[:count]
    summary = {}
    for t in targets:
        finite = np.isfinite(masses[t])
        mean, std = _finite_stats(masses[t])
        summary[t] = {
            "mean": mean,
            "std": std,
            "n": int(finite.sum()),
            "skipped": int((~finite).sum()),
            "box_share": _finite_stats(shares[finite])[0],
        }
    result = {
        "layer": cam.layer_name,
        "num_images": count,
        "image_ids": list(test.image_ids["test"][:count]),
        "box_share": {"mean": _finite_stats(shares)[0], "n": count},
        "targets": summary,
        "masses": masses,
        "box_shares": shares,
    }
    return result, kept


def _check_explained_class(explained_class):
    if explained_class not in EXPLAINED_CLASSES:
        raise GradCAMError(
            f"explained_class must be one of {', '.join(EXPLAINED_CLASSES)}. "
            f"Received: explained_class={explained_class!r}"
        )


def gradcam_mass_summary(
    run_dir,
    *,
    data=None,
    num_images=None,
    targets=("box", "class"),
    explained_class="predicted",
    layer_name=None,
    batch_size=16,
):
    """How much of a detect run's Grad-CAM falls inside the ground-truth box, over the test split.

    The test images are read as the run was trained (its `config.json`: `image_size`,
    `resize`) and explained in the model's own input frame, where the data pipeline puts the
    ground-truth box of each image's target; `inbox_mass` of each heatmap is then averaged
    over images. The reference is `box_share`, the mean `box_area_share` of the same images:
    what a flat heatmap, one that ignores the object, would score. The split is streamed in
    batches, so all of VOC's test set fits in memory.

    Args:
        run_dir: str, a finished `ssl-keras detect` run directory.
        data: str or None, the source spec whose test split is used (`voc:PATH`,
            `tfds:voc/2007`, `synthetic:N`, ...). Defaults to None: the run's own `data`.
        num_images: int or None, use the first `num_images` test images (dataset order).
            Defaults to None (all).
        targets: tuple of `TARGETS` values. Defaults to `("box", "class")`.
        explained_class: `"predicted"` (each image's predicted class, as in the figures) or
            `"label"` (its ground-truth class), for `target="class"`. Defaults to
            `"predicted"`.
        layer_name: str or None, the feature layer (see `GradCAM`). Defaults to None (automatic).
        batch_size: int, images per pass. Defaults to 16.

    Returns:
        A dict: `"run"`, `"data"` (the spec used), `"layer"`, `"image_size"`, `"resize"`,
        `"num_images"` (images used), `"image_ids"` (their ids, in order), `"box_share"`
        (`{"mean", "n"}` over all of them), `"targets"`: `{target: {"mean", "std", "n",
        "skipped", "box_share"}}` where `mean`/`std` (population std) are of the in-box
        mass over the `n` images with a non-zero heatmap, `skipped` counts the all-zero
        maps (left out: their mass is undefined), and `box_share` is the mean area share of
        those same `n` images (None when `n` is 0, as are `mean` and `std`); and the
        per-image values, `"masses"` (`{target: float64 [num_images]}`, NaN where skipped)
        and `"box_shares"` (float64 `[num_images]`).

    Example:

    >>> summary = gradcam_mass_summary("runs/detect_ssl", data="voc:VOCdevkit/VOC2007")
    >>> summary["targets"]["box"]["mean"], summary["box_share"]["mean"]   # vs. chance
    """
    from ssl_keras.localization.detect import load_run

    targets = _check_targets(targets)
    _check_count(num_images, "num_images")
    _check_explained_class(explained_class)
    model, record = load_run(os.fspath(run_dir))
    options = record["options"]
    spec = data or options.get("data")
    if not spec:
        raise ValueError(
            f"run {run_dir}: config.json names no data source; pass data=SPEC "
            "(e.g. data='voc:VOCdevkit/VOC2007')"
        )
    test = _load_test_split(spec, options, batch_size)
    result, _ = _mass_pass(
        model,
        test,
        targets=targets,
        num_images=num_images,
        keep=0,
        layer_name=layer_name,
        batch_size=batch_size,
        explained_class=explained_class,
    )
    return {
        "run": os.fspath(run_dir),
        "data": spec,
        "image_size": int(options["image_size"]),
        "resize": options["resize"],
        **result,
    }


def _mass_caption(mass):
    return "no evidence" if not np.isfinite(mass) else f"in box {mass:.2f}"


def _json_floats(values):
    return [None if not np.isfinite(v) else round(float(v), 4) for v in values]


def gradcam_across_backbones(
    models,
    *,
    data,
    out_dir,
    num_images=4,
    mass_images=None,
    targets=("box", "class"),
    log=print,
    explained_class="predicted",
    layer_name=None,
    batch_size=16,
):
    """Grad-CAM of several detect runs on the same test images, and how much lands on the object.

    For each target, one grid of the first `num_images` test images of `data` (rows) by
    model (columns), each overlay in that model's own input frame (its `image_size` and
    `resize`) with the ground-truth box drawn and captioned with its in-box mass; and, per
    model and target, the `gradcam_mass_summary` numbers over the first `mass_images` test
    images. Every model sees the same images: the test split of the one `data` spec, in
    dataset order (synthetic sources: the held-out last 15% of the scenes; VOC: the `test`
    image set). Outputs are recomputed and replaced on every call.

    Writes `out_dir/gradcam_<target>.png` and `out_dir/gradcam_mass.json` (the returned
    dict plus `"models"` (title -> run dir), `"layers"`, `"data"`, `"explained_class"`,
    `"model_box_share"` (title -> `{"mean", "n"}` in that model's frame), and `"per_image"`:
    the mass images' ids, area shares and per-model, per-target masses, null where skipped,
    for paired comparisons).

    Args:
        models: mapping (e.g. `dict`, kept in order) of column title -> detect run directory.
        data: str, the source spec whose test split is shown and measured.
        out_dir: str, output folder, created if missing.
        num_images: int, grid rows: the first `num_images` test images. Defaults to 4.
        mass_images: int or None, the in-box mass uses the first `mass_images` test images.
            Defaults to None (all).
        targets: tuple of `TARGETS` values. Defaults to `("box", "class")`.
        log: function taking one line of text, or None. Defaults to `print`.
        explained_class: `"predicted"` or `"label"` (see `gradcam_mass_summary`). Defaults
            to `"predicted"`.
        layer_name: str or None, the feature layer of every model (see `GradCAM`). Defaults
            to None (automatic, per model).
        batch_size: int, images per pass. Defaults to 16.

    Returns:
        A dict: `"grids"`: `{target: png path}`; `"mass"`: `{title: {target: {"mean",
        "std", "n", "skipped", "box_share"}}}` (as in `gradcam_mass_summary`); `"box_share"`:
        `{"mean", "n"}`, the chance level, over all mass images in the first model's frame
        (the same for every model when they share `image_size` and `resize`); `"images"`:
        the ids of the grid's images, top to bottom; `"json"`: the path of
        `gradcam_mass.json`.

    Example:

    >>> result = gradcam_across_backbones({"SSL": "runs/ssl", "ImageNet": "runs/imagenet"},
    ...                                   data="voc:VOCdevkit/VOC2007", out_dir="report/gradcam")
    >>> result["mass"]["SSL"]["box"]["mean"], result["box_share"]["mean"]
    """
    return _gradcam_across(
        models,
        data=data,
        out_dir=out_dir,
        num_images=num_images,
        mass_images=mass_images,
        targets=targets,
        log=log or (lambda line: None),
        explained_class=explained_class,
        layer_name=layer_name,
        batch_size=batch_size,
    )


def _gradcam_across(
    models,
    *,
    data,
    out_dir,
    num_images,
    mass_images,
    targets,
    log,
    explained_class,
    layer_name,
    batch_size,
):
    """`gradcam_across_backbones` once its defaults are resolved."""
    titles, run_dirs, targets = _check_across_arguments(
        models,
        data=data,
        targets=targets,
        num_images=num_images,
        mass_images=mass_images,
        explained_class=explained_class,
    )
    out_dir = os.path.abspath(os.fspath(out_dir))
    make_directory(out_dir, what="the Grad-CAM folder")
    runs = _explain_runs(
        titles,
        run_dirs,
        data=data,
        targets=targets,
        num_images=num_images,
        mass_images=mass_images,
        layer_name=layer_name,
        batch_size=batch_size,
        explained_class=explained_class,
        log=log,
    )
    return _write_across_outputs(
        runs,
        out_dir,
        data=data,
        run_dirs=run_dirs,
        targets=targets,
        explained_class=explained_class,
        log=log,
    )


def _write_across_outputs(runs, out_dir, *, data, run_dirs, targets, explained_class, log):
    """Writes `gradcam_across_backbones`'s grids and mass JSON, and returns its result."""
    grids = {t: _write_grid(runs, t, os.path.join(out_dir, f"gradcam_{t}.png")) for t in targets}
    result = {
        "grids": grids,
        "mass": {title: summary["targets"] for title, summary, _ in runs},
        "box_share": runs[0][1]["box_share"],
        "images": list(runs[0][2]["image_ids"]),
        "json": os.path.join(out_dir, MASS_FILE),
    }
    write_json_atomic(
        result["json"],
        _mass_record(
            result,
            runs,
            data=data,
            run_dirs=run_dirs,
            targets=targets,
            explained_class=explained_class,
        ),
    )
    log(
        f"[gradcam] wrote {', '.join(os.path.basename(p) for p in grids.values())} and {MASS_FILE} in {out_dir}"
    )
    return result


def _check_across_arguments(models, *, data, targets, num_images, mass_images, explained_class):
    """`(titles, run_dirs, targets)` of `gradcam_across_backbones`, every argument and run checked
    before any work."""
    if not hasattr(models, "items") or not models:
        raise ValueError(
            "`models` must be a non-empty mapping of column title -> detect run directory, "
            f"e.g. {{'SSL': 'runs/ssl'}}. Received: models={models!r}"
        )
    titles = [str(title) for title in models]
    if len(set(titles)) != len(titles):
        raise ValueError(f"`models` titles must be distinct as strings. Received: titles={titles}")
    run_dirs = [os.fspath(d) for d in models.values()]
    if not data:
        raise ValueError(
            "`data` must name the source whose test split is shown, e.g. data='voc:VOCdevkit/VOC2007'"
        )
    targets = _check_targets(targets)
    _check_count(num_images, "num_images")
    if num_images is None:
        raise ValueError(
            "`num_images` must be an int >= 1 (the grid's rows). Received: num_images=None"
        )
    _check_count(mass_images, "mass_images")
    _check_explained_class(explained_class)
    for run_dir in run_dirs:
        for name in ("config.json", "model.keras"):
            if not os.path.isfile(os.path.join(run_dir, name)):
                raise FileNotFoundError(
                    f"model {run_dir}: {name} is missing; is it a finished detect run?"
                )
    return titles, run_dirs, targets


def _explain_runs(
    titles,
    run_dirs,
    *,
    data,
    targets,
    num_images,
    mass_images,
    layer_name,
    batch_size,
    explained_class,
    log,
):
    """One `(title, summary, kept)` per run (see `_mass_pass`), all on the same test images of `data`.

    The test split is read once per `(image_size, resize)`; one model is loaded at a time.
    """
    from ssl_keras.localization.detect import load_run

    splits, runs = {}, []
    for title, run_dir in zip(titles, run_dirs):
        model, record = load_run(run_dir)
        options = record["options"]
        frame = (int(options["image_size"]), options["resize"])
        if frame not in splits:
            splits[frame] = _load_test_split(data, options, batch_size)
        summary, kept = _mass_pass(
            model,
            splits[frame],
            targets=targets,
            num_images=mass_images,
            keep=num_images,
            layer_name=layer_name,
            batch_size=batch_size,
            explained_class=explained_class,
        )
        del model
        if runs and (
            summary["image_ids"] != runs[0][1]["image_ids"]
            or kept["image_ids"] != runs[0][2]["image_ids"]
        ):
            raise ValueError(
                f"model {title!r} ({run_dir}) reads other test images from {data!r} than "
                f"{titles[0]!r}; the comparison needs the same images in every column"
            )
        for t in targets:
            row = summary["targets"][t]
            shown = (
                "no non-zero map"
                if row["mean"] is None
                else f"{row['mean']:.3f} +- {row['std']:.3f}"
            )
            log(
                f"[gradcam] {title}: {t} in-box mass {shown} (n={row['n']}, skipped {row['skipped']}; "
                f"flat map {summary['box_share']['mean']:.3f})"
            )
        runs.append((title, summary, kept))
    return runs


def _write_grid(runs, target, path):
    """Writes the grid of `target`'s overlays, images (rows) by runs (columns), to `path`; returns `path`.

    Each overlay has the ground-truth box drawn and is captioned with its in-box mass; the first
    column also names the image.
    """
    from ssl_keras.localization.box_drawing import TRUE_COLOR, draw_boxes

    image_ids = runs[0][2]["image_ids"]
    rows = [[] for _ in image_ids]
    captions = [[] for _ in image_ids]
    for j, (_, _, kept) in enumerate(runs):
        for i, image_id in enumerate(image_ids):
            image = np.clip(np.round(kept["images"][i]), 0, 255).astype("uint8")
            line = max(1, round(image.shape[0] / 96))
            drawn = draw_boxes(
                overlay(image, kept["heatmaps"][target][i]),
                kept["boxes"][i][None],
                colors=[TRUE_COLOR],
                width=line,
            )
            rows[i].append(drawn)
            caption = _mass_caption(kept["masses"][target][i])
            captions[i].append(f"{image_id}\n{caption}" if j == 0 else caption)
    gradcam_grid(
        rows,
        titles=captions,
        column_titles=[title for title, _, _ in runs],
        path=path,
        tile_inches=1.6,
        dpi=80,
    )
    return path


def _mass_record(result, runs, *, data, run_dirs, targets, explained_class):
    """The content of `gradcam_mass.json`: `result` (less its `"json"`) and what each run measured."""
    first = runs[0][1]
    return {
        **{k: v for k, v in result.items() if k != "json"},
        "data": data,
        "explained_class": explained_class,
        "models": {title: run_dir for (title, _, _), run_dir in zip(runs, run_dirs)},
        "layers": {title: summary["layer"] for title, summary, _ in runs},
        "model_box_share": {title: summary["box_share"] for title, summary, _ in runs},
        "per_image": {
            "image_ids": first["image_ids"],
            "box_share": _json_floats(first["box_shares"]),
            "mass": {
                title: {t: _json_floats(summary["masses"][t]) for t in targets}
                for title, summary, _ in runs
            },
        },
    }
