"""A real multi-worker SimCLR run on this machine: 2 worker processes on localhost (issue 15).

Each worker is an `ssl-keras pretrain --distribute multi-worker` process whose `TF_CONFIG`
names both workers on loopback ports; TensorFlow's `MultiWorkerMirroredStrategy` all-reduces
their gradients and all-gathers the projections for NT-Xent. Each worker writes its own run
directory. The table gives the wall time of the run and the largest difference between the two
workers' final encoder weights (0 means they ended identical).

Usage: python benchmarks/multi_worker_localhost.py [--epochs 2] [--images 64] [--out DIR]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(out, *, epochs, images, batch_size=8, image_size=32, timeout=600):
    """Starts both workers, waits for them, and returns `(wall seconds, [run dirs], [outputs])`."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    args = [
        "--data",
        f"synthetic:{images}",
        "--backbone",
        "tiny",
        "--batch-size",
        str(batch_size),
        "--image-size",
        str(image_size),
        "--epochs",
        str(epochs),
        "--warmup-epochs",
        "0",
        "--seed",
        "0",
        "--distribute",
        "multi-worker",
        "--quiet",
        "--no-export",
    ]
    processes, run_dirs, logs = [], [], []
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    for index in range(2):
        run_dir = os.path.join(out, f"worker{index}")
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config)}
        command = [sys.executable, "-m", "ssl_keras.cli.main", "pretrain", "--out", run_dir, *args]
        # A file, not a pipe: nobody reads a pipe while both workers run, and a full one blocks.
        logs.append(open(os.path.join(out, f"worker{index}.log"), "w+"))
        processes.append(
            subprocess.Popen(command, env=env, stdout=logs[-1], stderr=subprocess.STDOUT)
        )
        run_dirs.append(run_dir)
    _wait_for_all(processes, started + timeout)
    wall = time.perf_counter() - started
    outputs = []
    for process, log in zip(processes, logs):
        process.wait()
        log.seek(0)
        outputs.append(log.read())
        log.close()
    for process, output in zip(processes, outputs):
        if process.returncode != 0:
            raise RuntimeError(f"a worker failed (exit {process.returncode}):\n{output[-3000:]}")
    return wall, run_dirs, outputs


def _wait_for_all(processes, deadline):
    """Waits for every worker; one that fails, or the deadline, stops the others.

    A worker whose peer has died would otherwise wait for its collectives until the timeout.
    """
    while any(p.poll() is None for p in processes):
        failed = any(p.poll() not in (None, 0) for p in processes)
        if failed or time.perf_counter() > deadline:
            for p in processes:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.2)


def weight_difference(run_dirs):
    import keras
    import numpy as np

    first, second = (
        keras.saving.load_model(os.path.join(d, "encoder.keras")).get_weights() for d in run_dirs
    )
    return max(float(np.max(np.abs(a - b))) for a, b in zip(first, second))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--out", default=None, help="folder for the two run directories")
    options = parser.parse_args()
    out = options.out or tempfile.mkdtemp(prefix="multi_worker_")
    wall, run_dirs, _ = run_workers(out, epochs=options.epochs, images=options.images)
    results = [json.load(open(os.path.join(d, "result.json"))) for d in run_dirs]
    print(
        "| workers | epochs | images | global batch | replicas | wall (s) | loss w0 | loss w1 "
        "| max weight difference |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| 2 | {options.epochs} | {options.images} | "
        f"{results[0]['distribution']['global_batch_size']} | "
        f"{results[0]['distribution']['num_replicas']} | {wall:.1f} | "
        f"{results[0]['loss']:.4f} | {results[1]['loss']:.4f} | {weight_difference(run_dirs):.3g} |"
    )


if __name__ == "__main__":
    main()
