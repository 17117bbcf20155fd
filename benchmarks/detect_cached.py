"""Frozen-backbone detect epochs: training on cached features vs running the backbone every step.

Both cases train the same spatial head on the same VOC training images with the backbone
frozen, as `ssl-keras detect --mode freeze` does:

- uncached: images through the frozen backbone in every step, with `BoxAugmenter`'s flip and
  scale/translate jitter (the `--no-cache-features` path);
- cached: the backbone's outputs for every image and its flip computed once
  (`backbone_outputs`), then epochs over them (`cached_train_stream`, flips only).

It reports the one-time cache cost, the median training epoch (no validation) over
`--epochs` timed epochs after one warm-up epoch, epochs per second and the ratio.

Usage: python benchmarks/detect_cached.py [--data voc:../shared/data/voc2007]
       [--backbone EfficientNetB1 | ENCODER.keras] [--image-size 128] [--epochs 3]
"""

import argparse
import os
import platform
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "voc2007")
    parser.add_argument("--data", default=f"voc:{os.path.normpath(default_data)}")
    parser.add_argument(
        "--backbone", default="EfficientNetB1", help="keras.applications name or an encoder.keras"
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--epochs", type=int, default=3, help="timed epochs per case (after one warm-up)"
    )
    args = parser.parse_args()

    import keras

    from ssl_keras.backbone import feature_map_backbone, make_backbone
    from ssl_keras.localization.box_augmenter import BoxAugmenter
    from ssl_keras.localization.box_regressor import BoxRegressor
    from ssl_keras.data.feature_cache import backbone_outputs, cached_train_stream
    from ssl_keras.data.localization import load_localization_data

    keras.utils.set_random_seed(0)
    data = load_localization_data(
        args.data, image_size=args.image_size, batch_size=args.batch_size, seed=2, splits=("train",)
    )
    steps = -(-len(data.train_ids) // args.batch_size)
    if args.backbone.endswith(".keras"):
        backbone = keras.saving.load_model(args.backbone)
    else:
        backbone = make_backbone(args.backbone)
    backbone = feature_map_backbone(backbone)
    backbone.trainable = False

    def epoch_seconds(model, dataset):
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), jit_compile=False)
        times = []
        for epoch in range(args.epochs + 1):
            start = time.perf_counter()
            model.fit(
                dataset, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps, verbose=0
            )
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    num_classes = len(data.class_names)
    uncached_model = BoxRegressor(
        backbone, num_classes=num_classes, head="spatial", augmenter=BoxAugmenter(seed=1)
    )
    uncached_stream = data.train_stream(0).map(
        lambda image, targets: ({"images": image, "boxes": targets["boxes"]}, targets)
    )
    uncached = epoch_seconds(uncached_model, uncached_stream)

    start = time.perf_counter()
    cache = backbone_outputs(backbone, data.train_stream(0, shuffle=False).take(steps), flip=True)
    cache_seconds = time.perf_counter() - start
    cached_model = BoxRegressor(backbone, num_classes=num_classes, head="spatial", augmenter=None)
    cached = epoch_seconds(
        cached_model, cached_train_stream(cache, batch_size=args.batch_size, seed=2, flip_seed=1)(0)
    )

    print(
        f"# frozen detect epochs, {os.path.basename(args.backbone)} at {args.image_size} px, "
        f"{len(data.train_ids)} training images, batch {args.batch_size}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, keras {keras.__version__} ({keras.config.backend()})"
    )
    print("| path | one-time cost (s) | median epoch (s) | epochs/s | speed-up |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| uncached (backbone every step, flip + jitter) | 0 | {uncached:.2f} | {1 / uncached:.3f} | 1.0x |"
    )
    print(
        f"| cached (features of images + flips once) | {cache_seconds:.1f} | {cached:.3f} | {1 / cached:.2f} | "
        f"{uncached / cached:.0f}x |"
    )
    print(
        f"cached pays for its cache after {cache_seconds / max(uncached - cached, 1e-9):.1f} epochs"
    )


if __name__ == "__main__":
    main()
