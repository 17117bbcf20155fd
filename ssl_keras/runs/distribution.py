"""Data-parallel training on the engines that exist for it: `tf.distribute` and `keras.distribution`.

What the losses need from the engine is two questions, answered here once for every backend:

- how many replicas share the step, and which one is running (`replica_context`);
- the rows of a tensor from every replica, in replica order (`all_gather`).

On the TensorFlow backend, `model.fit` under a `tf.distribute` strategy runs the step once per
replica, each on its shard of the global batch, so a contrastive loss sees only its own shard
unless it gathers the others. On the JAX backend, `keras.distribution.DataParallel` shards the
global batch over the devices but traces one program over the *global* arrays: a loss there
already sees every row, so there is nothing to gather (and BatchNorm statistics are already
computed over the global batch). The torch backend has no multi-device path in Keras.

TensorFlow is imported only on its backend, when a strategy is in use.
"""

import contextlib
import json
import os

import keras
from keras import ops

from ssl_keras.runs.config import DISTRIBUTE, ConfigError


def replica_context():
    """`(num_replicas, replica_id)` of the step being traced; `(1, 0)` outside a TF strategy.

    `replica_id` is a Python int where the strategy fixes it, else a scalar int32 tensor.
    """
    context = _tf_replica_context()
    if context is None:
        return 1, 0
    return context.num_replicas_in_sync, context.replica_id_in_sync_group


def all_gather(x):
    """`x`'s rows from every replica, concatenated along axis 0 in replica order.

    Differentiable: the gradient of the gathered tensor flows back to each replica's own rows
    (TensorFlow's `all_gather` gradient is the all-reduced slice), so a loss over the gathered
    rows gets the same gradient as the one-device loss over the global batch. Outside a TF
    strategy (one device, or JAX's global arrays) it returns `x`.
    """
    context = _tf_replica_context()
    if context is None:
        return x
    return context.all_gather(x, axis=0)


def _tf_replica_context():
    """The TF replica context of a step running under a strategy with several replicas, or None."""
    if keras.config.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def scale_for_replicas(loss):
    """`loss / num_replicas` inside a TF strategy's step, else `loss`.

    Each replica's gradients are summed across replicas, so a step's loss must be its share of
    the global mean. A `keras.losses.Loss` does this itself; a loss computed with `keras.ops`
    in `compute_loss` (a mean over the replica's own rows) needs this. Keras unscales it again
    for the logged `loss`.
    """
    num_replicas, _ = replica_context()
    return loss if num_replicas == 1 else loss / num_replicas


def replica_mean(values):
    """The mean of per-example `values` over the global batch, as this replica's share of it.

    On one device, `mean(values)`. Under a TF strategy, `sum(values) / N` with `N` the number of
    examples on all replicas together: the replicas' gradients add up to the gradient of the
    global mean even when the last batch of an epoch splits unevenly (e.g. 5 images as 3 + 2),
    where the mean of the replicas' means would weight the smaller shard's examples more.
    """
    values = ops.cast(values, "float32")
    context = _tf_replica_context()
    if context is None:
        return ops.mean(values)
    count = ops.cast(ops.shape(values)[0], "float32")
    return ops.sum(values) / context.all_reduce("SUM", count)


def logs_for_reduction(logs):
    """A step's logs, shaped so that the engine can combine them across replicas.

    Keras 3's TensorFlow trainer combines the logs of a multi-worker step with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars ("Invalid reduction
    dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388), so no model can
    `fit` under `MultiWorkerMirroredStrategy`. Under that strategy each log becomes a [1]
    tensor, which the same call averages over the workers into the scalar Keras expects;
    elsewhere the logs are returned as they are.
    """
    if not _multi_worker():
        return logs
    return {name: ops.reshape(value, (1,)) for name, value in logs.items()}


def _multi_worker():
    context = _tf_replica_context()
    if context is None:
        return False
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and len(_tf_config_workers()) > 1
    )


def local_rows(n, replica_id):
    """Global row indices `[replica_id * n, (replica_id + 1) * n)` of a replica's `n` rows."""
    return ops.arange(n, dtype="int32") + ops.cast(replica_id, "int32") * ops.cast(n, "int32")


STRATEGIES = DISTRIBUTE
"""`--distribute` values: `auto` picks from the visible devices, `none` is one device."""

_BACKEND_STRATEGIES = {
    "tensorflow": ("none", "mirrored", "multi-worker"),
    "jax": ("none", "data-parallel"),
    "torch": ("none",),
}


class DistributionError(ConfigError):
    """A `--distribute` value that this backend or machine cannot run."""


class Distribution:
    """A resolved `--distribute` choice: what to enter around building and fitting a model.

    Args:
        name: str, the strategy in use (`STRATEGIES`, never `"auto"`).
        num_replicas: int, replicas that share each step (devices times hosts).
        engine: the `tf.distribute.Strategy` (TensorFlow) or `keras.distribution.Distribution`
            (JAX), or None on one device.
    """

    def __init__(self, *, name, num_replicas, engine=None):
        self.name = name
        self.num_replicas = int(num_replicas)
        self.engine = engine

    def scope(self):
        """Context manager: build, compile and fit the model inside it."""
        if self.engine is None:
            return contextlib.nullcontext()
        return self.engine.scope()

    def per_replica_batch(self, global_batch):
        """The images per replica of a `--batch-size` of `global_batch` (the global batch).

        Raises:
            DistributionError: `global_batch` is not a multiple of the number of replicas.
        """
        if global_batch % self.num_replicas:
            raise DistributionError(
                f"--batch-size {global_batch} is the global batch and must be a multiple of the "
                f"{self.num_replicas} replicas of --distribute {self.name}"
            )
        return global_batch // self.num_replicas

    def check_first_batch(self, count, global_batch, split):
        """Refuses a split whose first batch cannot be shared out evenly over the replicas.

        Under a strategy, Keras builds the model from the first batch of every replica and
        needs them equal in shape: a split smaller than the global batch whose size does not
        divide by the replicas fails inside Keras.

        Raises:
            DistributionError: naming the split and the largest batch that works.
        """
        if self.num_replicas == 1 or count >= global_batch or count % self.num_replicas == 0:
            return
        raise DistributionError(
            f"the {split} split has {count} images, fewer than --batch-size {global_batch}, and "
            f"they do not split evenly over the {self.num_replicas} replicas of --distribute "
            f"{self.name}; use a --batch-size of at most {count - count % self.num_replicas}"
        )

    def describe(self, global_batch):
        """The record `result.json` keeps: strategy, replicas, global and per-replica batch."""
        return {
            "strategy": self.name,
            "num_replicas": self.num_replicas,
            "global_batch_size": int(global_batch),
            "per_replica_batch_size": self.per_replica_batch(global_batch),
        }


def resolve_distribution(name="auto"):
    """The `Distribution` of a `--distribute` value on the active Keras backend.

    `auto` is `multi-worker` when `TF_CONFIG` names several workers (TensorFlow), `mirrored`
    (TensorFlow) or `data-parallel` (JAX) when several accelerators are visible, and `none`
    otherwise. CPU cores are never split into replicas by `auto`.

    Raises:
        DistributionError: `name` is unknown, or not available on this backend.
    """
    backend = keras.config.backend()
    if name not in STRATEGIES:
        raise DistributionError(
            f"--distribute must be one of {', '.join(STRATEGIES)}. Received: {name!r}"
        )
    if name == "auto":
        name = _auto_strategy(backend)
    allowed = _BACKEND_STRATEGIES.get(backend, ("none",))
    if name not in allowed:
        raise DistributionError(
            f"--distribute {name} is not available on the {backend} backend "
            f"(it offers: {', '.join(allowed)})"
        )
    if name == "none":
        return Distribution(name="none", num_replicas=1)
    if backend == "jax":
        return _jax_data_parallel()
    return _tf_strategy(name)


def _auto_strategy(backend):
    if backend == "tensorflow":
        if len(_tf_config_workers()) > 1:
            return "multi-worker"
        import tensorflow as tf

        return "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    if backend == "jax":
        import jax

        accelerators = [d for d in jax.devices() if d.platform != "cpu"]
        return "data-parallel" if len(accelerators) > 1 else "none"
    return "none"


def _tf_config_workers():
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except json.JSONDecodeError as error:
        raise DistributionError(f"TF_CONFIG is not valid JSON: {error}") from None
    return config.get("cluster", {}).get("worker", [])


def _tf_strategy(name):
    import tensorflow as tf

    if name == "multi-worker":
        if not _tf_config_workers():
            raise DistributionError(
                "--distribute multi-worker needs TF_CONFIG with a cluster of workers and this "
                'process\'s task, e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    return Distribution(name=name, num_replicas=strategy.num_replicas_in_sync, engine=strategy)


def _jax_data_parallel():
    import jax

    if os.environ.get("JAX_COORDINATOR_ADDRESS") and not _jax_distributed_initialized(jax):
        # Several hosts: each process learns the others from the coordinator.
        jax.distributed.initialize()
    devices = jax.devices()
    engine = keras.distribution.DataParallel(devices=devices)
    return Distribution(name="data-parallel", num_replicas=len(devices), engine=engine)


def _jax_distributed_initialized(jax):
    return jax.process_count() > 1


def synchronize_batch_norm(model):
    """Makes every BatchNormalization layer of `model` compute its statistics over all replicas.

    With per-replica statistics SimCLR can cheat: the two views of an image sit on the same
    replica, and the batch statistics leak which samples share a shard. On TensorFlow this sets
    Keras' `BatchNormalization(synchronized=True)` (an all-reduce of the moments). JAX's
    `DataParallel` already computes them over the global batch, and one device has nothing to
    synchronize: there it changes nothing.

    Call it once the model is built: layers that a `build` creates (a projection head's) exist
    only then.

    Returns:
        The number of layers changed.

    Raises:
        ValueError: `model` is not built yet.
    """
    if not model.built:
        raise ValueError("synchronize_batch_norm needs a built model: call model.build first")
    if keras.config.backend() != "tensorflow":
        return 0
    changed = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            changed += 1
    return changed


def _all_layers(model):
    seen, stack, layers = set(), [model], []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        layers.append(layer)
        stack.extend(getattr(layer, "_layers", []) or [])
        stack.extend(getattr(layer, "layers", []) or [])
    return layers


def set_up_devices(config, log=print):
    """Applies a run config's `precision` (if it has one) and resolves its `distribute`.

    A tf.distribute strategy must exist before the first TensorFlow operation of a multi-worker
    program, so runs call this first. `--batch-size` is the global batch: it must split evenly
    over the replicas.

    Returns:
        The `Distribution`.

    Raises:
        DistributionError: the strategy is not available here, or the batch does not split.
    """
    precision = config.resolved_precision() if hasattr(config, "resolved_precision") else "float32"
    keras.mixed_precision.set_global_policy(precision)
    distribution = resolve_distribution(config.distribute)
    per_replica = distribution.per_replica_batch(config.batch_size)
    if distribution.num_replicas > 1:
        log(
            f"distribute: {distribution.name}, {distribution.num_replicas} replicas of "
            f"{per_replica} images (global batch {config.batch_size})"
        )
    return distribution


def prepare_model(model, config, distribution):
    """Synchronizes a built model's BatchNorm across replicas where `config.sync_bn` asks for it.

    `sync_bn` None means on when several replicas share a step.

    Returns:
        Whether BatchNorm is synchronized.
    """
    sync_bn = config.sync_bn if config.sync_bn is not None else distribution.num_replicas > 1
    if sync_bn:
        synchronize_batch_norm(model)
    return bool(sync_bn)
