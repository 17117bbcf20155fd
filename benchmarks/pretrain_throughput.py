"""Pretraining throughput and peak memory: SimCLR train step vs a bare Keras train step.

Each case runs in its own subprocess (so peak RSS is its own), builds the model, runs warm-up
steps (graph tracing), then times `--steps` steps with `train_on_batch` and reports the median.

- bare: the same backbone + a Dense(128) head, plain `compile(loss="mse")`, on 2B images
  per step (the number of views a SimCLR step of batch B encodes).
- simclr: `SimCLR` on batch B: two augmented views, encoder, projection head, NT-Xent.
- augment: the `SimCLRAugmenter` alone, two views of batch B (in a tf.function).

Usage: python benchmarks/pretrain_throughput.py [--backbone EfficientNetB1] [--image-size 96]
       [--batch-size 64] [--steps 8]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CASES = ("bare", "simclr", "augment")


def run_case(case, backbone, image_size, batch_size, steps, warmup):
    import resource

    import keras
    import numpy as np

    from ssl_keras.backbone import make_backbone
    from ssl_keras.pretraining.simclr import SimCLR
    from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    if case == "bare":
        encoder = make_backbone(backbone)
        inputs = keras.Input((image_size, image_size, 3))
        model = keras.Model(inputs, keras.layers.Dense(128)(encoder(inputs)))
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="mse", jit_compile=False)
        x = np.concatenate([images, images])
        y = rng.normal(size=(2 * batch_size, 128)).astype("float32")
        step = lambda: model.train_on_batch(x, y)
    elif case == "simclr":
        model = SimCLR(make_backbone(backbone), augmenter=SimCLRAugmenter(seed=1))
        model.compile(jit_compile=False)
        step = lambda: model.train_on_batch(images)
    else:
        import tensorflow as tf

        augmenter = SimCLRAugmenter(seed=1)
        fn = tf.function(lambda x: (augmenter(x, training=True), augmenter(x, training=True)))
        step = lambda: [t.numpy() for t in fn(images)]
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "case": case,
        "median_step_s": median,
        "images_per_s": batch_size / median,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "backend": keras.config.backend(),
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="EfficientNetB1")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(
            json.dumps(
                run_case(
                    args.case,
                    args.backbone,
                    args.image_size,
                    args.batch_size,
                    args.steps,
                    args.warmup,
                )
            )
        )
        return
    rows = []
    for case in CASES:
        command = [
            sys.executable,
            __file__,
            "--case",
            case,
            "--backbone",
            args.backbone,
            "--image-size",
            str(args.image_size),
            "--batch-size",
            str(args.batch_size),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        output = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print(
        f"# {args.backbone}, {args.image_size}px, batch {args.batch_size} (SimCLR encodes 2x{args.batch_size} views), "
        f"{args.steps} timed steps after {args.warmup} warm-up; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, backend {rows[0]['backend']}"
    )
    print("| case | median step (s) | unique images/s | peak RSS (MB) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['case']} | {row['median_step_s']:.3f} | {row['images_per_s']:.1f} | {row['peak_rss_mb']:.0f} |"
        )
    bare, simclr = rows[0]["median_step_s"], rows[1]["median_step_s"]
    print(f"\nSimCLR step / bare step (same number of encoded views): {simclr / bare:.2f}x")


if __name__ == "__main__":
    main()
