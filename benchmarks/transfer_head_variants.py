"""Which box head can a frozen encoder's features support? Short runs on cached features.

The issue-11 measurement behind `--head spatial`: one frozen encoder, its features computed
once (train images and their flips, val, test), then several heads trained on them with the
model selected on val mean IoU (as `ssl-keras detect` does), next to the constant prior box.

Feature levels (EfficientNet layer names): `top` = `top_activation` (stride 32), `s16` =
`block6a_expand_activation` (stride 16, before the last downsampling).
Heads:
- `pooled`: `PooledBoxHead` (global average pool, Dense 256, box by sigmoid centre/size);
- `spatial`: `SpatialBoxHead` (soft argmax over the cells), with `channels` of reduction;
- `flatten`: a 1x1 reduction to 32 channels, flattened into Dense 256 (the head is tied to
  the map size; not in the library).

Usage: python benchmarks/transfer_head_variants.py --encoder runs/sup-b1-64/encoder.keras
       [--data voc:../shared/data/voc2007] [--image-size 128] [--epochs 40] [--seeds 1]
"""

import argparse
import os
import statistics


def feature_model(encoder, levels):
    import keras

    from ssl_keras.backbone import feature_map_backbone

    names = {"top": None, "s16": "block6a_expand_activation"}
    if set(levels) - set(names):
        raise SystemExit(f"--levels must be among {', '.join(names)}")
    trunk = feature_map_backbone(encoder)
    outputs = [
        trunk.outputs[0] if names[level] is None else encoder.get_layer(names[level]).output
        for level in levels
    ]
    return keras.Model(encoder.inputs, outputs)


def flatten_head(num_classes):
    import keras
    from keras import ops

    from ssl_keras.localization.box_heads import boxes_from_center_size

    class FlattenHead(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.reduce = keras.layers.Conv2D(32, 1, activation="relu")
            self.flatten = keras.layers.Flatten()
            self.hidden = keras.layers.Dense(256, activation="relu")
            self.drop = keras.layers.Dropout(0.5)
            self.box = keras.layers.Dense(4)
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.cls_hidden = keras.layers.Dense(256, activation="relu")
            self.cls = keras.layers.Dense(num_classes)

        def call(self, x, training=None):
            r = self.hidden(self.drop(self.flatten(self.reduce(x)), training=training))
            logits = self.cls(self.cls_hidden(self.pool(x)))
            return boxes_from_center_size(ops.cast(self.box(r), "float32")), ops.cast(
                logits, "float32"
            )

    return FlattenHead()


def train_head(head_name, cache, val, test, *, num_classes, epochs, seed, batch_size=32):
    import keras
    import numpy as np

    from ssl_keras.localization.box_iou import box_iou_numpy
    from ssl_keras.localization.box_regressor import BoxRegressor
    from ssl_keras.data.feature_cache import cached_train_stream

    keras.utils.set_random_seed(seed)
    shape = cache["features"].shape[1:]
    inputs = keras.Input(shape)
    model = BoxRegressor(
        keras.Model(inputs, inputs),
        num_classes=num_classes,
        augmenter=None,
        head="pooled" if head_name == "pooled" else "spatial",
    )
    if head_name == "flatten":
        model.head = flatten_head(num_classes)
    steps = -(-len(cache["labels"]) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, epochs * steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), jit_compile=False)
    stream = cached_train_stream(cache, batch_size=batch_size, seed=seed, flip_seed=seed + 1)(0)

    def score(split):
        out = model({"features": split["features"]}, training=False)
        iou = box_iou_numpy(split["boxes"], keras.ops.convert_to_numpy(out["boxes"]))
        top1 = (
            np.argmax(keras.ops.convert_to_numpy(out["class_logits"]), -1) == split["labels"]
        ).mean()
        return float(iou.mean()), float((iou >= 0.5).mean()), float(top1)

    best = None
    for epoch in range(epochs):
        model.fit(stream, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps, verbose=0)
        val_iou = score(val)[0]
        if best is None or val_iou > best[0]:
            best = (val_iou, epoch + 1, score(test))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "voc2007")
    parser.add_argument("--data", default=f"voc:{os.path.normpath(default_data)}")
    parser.add_argument("--encoder", required=True, help="an encoder.keras (a pretrain run's)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--levels", default="top,s16")
    parser.add_argument("--heads", default="pooled,spatial,flatten")
    args = parser.parse_args()

    import keras

    from ssl_keras.localization.box_baselines import fit_baselines, score_baselines
    from ssl_keras.data.feature_cache import backbone_outputs
    from ssl_keras.data.localization import load_localization_data

    data = load_localization_data(args.data, image_size=args.image_size, batch_size=32, seed=2)
    names = list(data.class_names)
    levels = args.levels.split(",")
    model = feature_model(keras.saving.load_model(args.encoder), levels)
    steps = -(-len(data.train_ids) // 32)
    per_level = {level: {} for level in levels}
    for split, batches, flip in (
        ("train", data.train_stream(0, shuffle=False).take(steps), True),
        ("val", data.val, False),
        ("test", data.test, False),
    ):
        for level_index, level in enumerate(levels):
            single = keras.Model(model.inputs, model.outputs[level_index])
            per_level[level][split] = backbone_outputs(single, batches, flip=flip)
    fitted = fit_baselines(data.targets["train"]["boxes"], data.targets["train"]["labels"], names)
    prior = score_baselines(
        fitted, data.targets["test"]["boxes"], data.targets["test"]["labels"], names
    )
    print(
        f"# frozen {os.path.basename(os.path.dirname(os.path.abspath(args.encoder)))} encoder, {args.image_size} px, "
        f"{len(data.train_ids)} train / {data.num_images['val']} val / {data.num_images['test']} test; "
        f"{args.epochs} epochs, best val epoch; seeds {args.seeds}"
    )
    print("| level | map | head | test mean IoU | test LocAcc@0.5 | test top-1 | best epoch |")
    print("|---|---|---|---:|---:|---:|---:|")
    print(
        f"| — | — | prior box | {prior['prior_box']['mean_iou']:.3f} | {prior['prior_box']['loc_acc@0.5']:.3f} | "
        f"{prior['majority_class']['top1']:.3f} (majority) | — |"
    )
    for level in levels:
        caches = per_level[level]
        for head in args.heads.split(","):
            runs = [
                train_head(
                    head,
                    caches["train"],
                    caches["val"],
                    caches["test"],
                    num_classes=len(names),
                    epochs=args.epochs,
                    seed=seed,
                )
                for seed in range(args.seeds)
            ]
            mean = lambda i: statistics.mean(r[2][i] for r in runs)
            shape = "x".join(str(d) for d in caches["train"]["features"].shape[1:3])
            print(
                f"| {level} | {shape} | {head} | {mean(0):.3f} | {mean(1):.3f} | {mean(2):.3f} | "
                f"{'/'.join(str(r[1]) for r in runs)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
