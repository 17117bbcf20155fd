"""Input pipeline: the resumable epoch stream vs the tf.data shuffle pipeline, and huge images.

- `shuffle`: `image_files.image_dataset` (tf.data shuffle, reshuffled each pass), the pipeline
  before epoch streams.
- `stream`: the `ImageSource.stream` used for training now (stateless (seed, pass) order, one
  flat_map per pass), from batch 0.
- `stream@resume`: the same stream started in the middle of pass 3 (what `--resume` does): the
  time to its first batch shows whether skipping costs decoding.
- `huge`: one 12000x9000 JPEG (a smooth pattern, 1.9 MB) through `read_image` (decoded at reduced size since the
  bad-input work) and through a full-size decode, in their own subprocesses for peak RSS.

Each pipeline case runs in its own subprocess; images/s is the median over `--repeats` timed
passes of `--batches` batches after one warm-up batch.

Usage: python benchmarks/input_pipeline.py [--data ../shared/data/unlabeled] [--images 2048]
       [--image-size 96] [--batch-size 64] [--batches 24] [--repeats 3]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

CASES = ("shuffle", "stream", "stream@resume", "huge:reduced", "huge:full")


def _peak_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(case, args):
    import numpy as np
    import tensorflow as tf

    from ssl_keras.data import image_files, unlabeled_images

    if case.startswith("huge"):
        path = args.huge
        if case == "huge:reduced":
            decode = tf.function(lambda p: image_files.read_image(p, image_size=args.image_size))
        else:
            decode = tf.function(
                lambda p: tf.image.resize(
                    tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False),
                    (args.image_size, args.image_size),
                    antialias=True,
                )
            )
        times = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            decode(tf.constant(path)).numpy()
            times.append(time.perf_counter() - start)
        return {
            "case": case,
            "seconds_first": times[0],
            "seconds_median": float(np.median(times[1:])),
            "peak_mb": _peak_mb(),
        }

    paths = image_files.list_image_files(args.data)
    source = unlabeled_images.load_image_source(
        args.data, image_size=args.image_size, batch_size=args.batch_size, seed=2
    )
    steps = source.steps_per_epoch
    if case == "shuffle":
        dataset = image_files.image_dataset(
            paths, image_size=args.image_size, batch_size=args.batch_size, seed=2, repeat=True
        )
        iterator = iter(dataset)
        first_start = time.perf_counter()
    else:
        start_batch = 3 * steps + steps // 2 if case == "stream@resume" else 0
        first_start = time.perf_counter()
        iterator = iter(source.stream(start_batch))
    next(iterator)
    first_batch = time.perf_counter() - first_start
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.batches):
            next(iterator)
        rates.append(args.batches * args.batch_size / (time.perf_counter() - start))
    return {
        "case": case,
        "images_per_second": float(np.median(rates)),
        "first_batch_seconds": first_batch,
        "peak_mb": _peak_mb(),
        "num_images": len(paths),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("SSL_KERAS_DATA", "../shared/data") + "/unlabeled"
    )
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--huge", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    # Both pipelines read the same files: the first --images photos, linked into one folder.
    subset = tempfile.mkdtemp(prefix="pipeline-bench-")
    names = sorted(
        n for n in os.listdir(args.data) if n.lower().endswith((".jpg", ".jpeg", ".png"))
    )[: args.images]
    for name in names:
        os.symlink(os.path.abspath(os.path.join(args.data, name)), os.path.join(subset, name))
    source_folder, args.data = args.data, subset
    # Written here, so the cases' peak RSS is the decode's alone.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import bad_files

    os.makedirs(subset + "-huge")
    args.huge = bad_files.huge_jpeg(subset + "-huge")
    rows = []
    for case in CASES:
        command = [sys.executable, __file__, "--case", case] + [
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k != "case" and v is not None
        ]
        output = subprocess.run(
            command, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        )
        if output.returncode != 0:
            raise SystemExit(f"case {case} failed:\n{output.stderr[-3000:]}")
        rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}"
    )
    print(
        f"data: {source_folder} (first {len(names)} files), {args.image_size}px, batch {args.batch_size}\n"
    )
    print("| case | images/s (median) | first batch (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        if "images_per_second" in row:
            print(
                f"| {row['case']} | {row['images_per_second']:.0f} | {row['first_batch_seconds']:.2f} | "
                f"{row['peak_mb']:.0f} |"
            )
    print("\n| 12000x9000 JPEG | first call (s) | median later call (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        if "seconds_median" in row:
            print(
                f"| {row['case']} | {row['seconds_first']:.2f} | {row['seconds_median']:.2f} | {row['peak_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
