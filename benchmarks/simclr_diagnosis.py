"""Short SimCLR runs that tell a learning recipe from a collapsing one, printed as a table.

Each variant changes one or a few settings of the same run (EfficientNetB1 from random init on
a folder of photos) and trains for `--steps` steps, recording every `--log-every` steps the
loss, the contrastive top-1 accuracy (chance: 1 / (2N - 1)), and the collapse metrics of the
projections (training step) and of the encoder features (inference mode, fixed batch). The
cosine schedule is laid out over `--horizon` steps, so a short run sees the learning rate of
the start of a long one.

    python benchmarks/simclr_diagnosis.py --data ../shared/data/unlabeled --variants base,tau0.2 \\
        --steps 200 --out runs/diagnosis

Each variant's curve is written to OUT/<variant>.json; the table compares the last points.
"""

import argparse
import json
import math
import os
import sys
import time

import keras
import numpy as np

from ssl_keras.backbone import configure_backbone, make_backbone
from ssl_keras.pretraining.collapse import CollapseMonitor
from ssl_keras.data.unlabeled_images import load_image_source
from ssl_keras.optimizers import build_optimizer
from ssl_keras.pretraining.projection_head import ProjectionHead
from ssl_keras.pretraining.simclr import SimCLR
from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter

BASE = {
    "backbone": "EfficientNetB1",
    "image_size": 64,
    "temperature": 0.1,
    "drop_connect_rate": None,
    "zero_init_residual": False,
    "optimizer": "adamw",
    "learning_rate": 1e-3,
    "weight_decay": 0.05,
    "warmup_steps": 20,
    "blur_sigma_range": (0.1, 2.0),
    "crop_area_min": 0.08,
    "projection_hidden_dim": None,
    "projection_layers": 2,
    "projection_dim": 128,
    "bn_momentum": None,
}

VARIANTS = {
    "base": {},
    "tau0.2": {"temperature": 0.2},
    "tau0.5": {"temperature": 0.5},
    "no-stochastic-depth": {"drop_connect_rate": 0.0},
    "zero-init-residual": {"zero_init_residual": True},
    "small-blur": {"blur_sigma_range": (0.1, 0.6)},
    "lr3e-4": {"learning_rate": 3e-4},
    "lamb": {"optimizer": "lamb", "learning_rate": 2e-3},
    "lars": {"optimizer": "lars", "learning_rate": 0.3 * 64 / 256, "weight_decay": 1e-6},
    "px96": {"image_size": 96},
    "zir+nosd": {"zero_init_residual": True, "drop_connect_rate": 0.0},
    "zir+nosd+tau0.2": {"zero_init_residual": True, "drop_connect_rate": 0.0, "temperature": 0.2},
    "zir+tau0.2": {"zero_init_residual": True, "temperature": 0.2},
    "nosd+tau0.2": {"drop_connect_rate": 0.0, "temperature": 0.2},
    "nosd+tau0.2+small-blur": {
        "drop_connect_rate": 0.0,
        "temperature": 0.2,
        "blur_sigma_range": (0.1, 0.6),
    },
    "crop0.25": {"crop_area_min": 0.25},
    "no-squeeze-excite": {"backbone": "EfficientNetB1-noSE"},
    "vgg8": {"backbone": "vgg8"},
    "bn0.9": {"bn_momentum": 0.9},
    "combined": {
        "zero_init_residual": True,
        "drop_connect_rate": 0.0,
        "blur_sigma_range": (0.03, 0.57),
        "crop_area_min": 0.25,
        "temperature": 0.2,
        "bn_momentum": 0.9,
    },
}


def parse_variant(name):
    """A variant is a name of VARIANTS, or `key=value,...` overrides joined with `+`."""
    settings = dict(BASE)
    for part in name.split("+"):
        if part in VARIANTS:
            settings.update(VARIANTS[part])
        elif "=" in part:
            key, value = part.split("=", 1)
            settings[key] = json.loads(value)
        elif part not in ("",):
            settings.update(VARIANTS[name])
            break
    return settings


def _no_squeeze_excite_b1():
    """EfficientNetB1 with every squeeze-excite block removed (a diagnosis only: not the paper's backbone)."""
    import copy

    from keras.src.applications import efficientnet

    blocks = copy.deepcopy(efficientnet.DEFAULT_BLOCKS_ARGS)
    for block in blocks:
        block["se_ratio"] = 0.0
    return efficientnet.EfficientNet(
        1.0,
        1.1,
        240,
        0.2,
        blocks_args=blocks,
        name="efficientnetb1_nose",
        include_top=False,
        weights=None,
        input_shape=(None, None, 3),
        pooling="avg",
    )


def _vgg8():
    """A plain 8-conv VGG-style CNN (BN + ReLU), the reference that learns (issue 10)."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for i, channels in enumerate((32, 32, 64, 64, 128, 128, 256, 256)):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        if i in (1, 3, 5):
            x = keras.layers.MaxPooling2D()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="vgg8")


class Curve(keras.callbacks.Callback):
    def __init__(self, log_every, started):
        super().__init__()
        self.log_every, self.started, self.points = log_every, started, []

    def on_epoch_end(self, epoch, logs=None):
        point = {
            "step": (epoch + 1) * self.log_every,
            "seconds": time.perf_counter() - self.started,
        }
        point.update({k: float(v) for k, v in (logs or {}).items()})
        self.points.append(point)
        print(" ".join(f"{k}={v:.4g}" for k, v in point.items()), flush=True)


def run_variant(name, args):
    settings = parse_variant(name)
    keras.utils.set_random_seed(args.seed)
    size = settings["image_size"]
    source = load_image_source(
        args.data, image_size=size, batch_size=args.batch_size, seed=args.seed
    )
    special = {"EfficientNetB1-noSE": _no_squeeze_excite_b1, "vgg8": _vgg8}
    encoder = (
        special[settings["backbone"]]()
        if settings["backbone"] in special
        else make_backbone(settings["backbone"])
    )
    encoder, configured = configure_backbone(
        encoder,
        drop_connect_rate=settings["drop_connect_rate"],
        zero_init_residual=settings["zero_init_residual"],
        bn_momentum=settings["bn_momentum"],
    )
    head = ProjectionHead(
        output_dim=settings["projection_dim"],
        hidden_dim=settings["projection_hidden_dim"],
        num_layers=settings["projection_layers"],
    )
    augmenter = SimCLRAugmenter(
        blur_sigma_range=tuple(settings["blur_sigma_range"]),
        crop_area_min=settings["crop_area_min"],
        seed=args.seed + 1,
    )
    model = SimCLR(
        encoder, projection_head=head, augmenter=augmenter, temperature=settings["temperature"]
    )
    model.compile(
        optimizer=build_optimizer(
            settings["optimizer"],
            learning_rate=settings["learning_rate"],
            total_steps=args.horizon,
            warmup_steps=settings["warmup_steps"],
            weight_decay=settings["weight_decay"],
        ),
        jit_compile=False,
    )
    fixed = np.asarray(next(iter(source.dataset.take(1))))
    started = time.perf_counter()
    curve = Curve(args.log_every, started)
    model.fit(
        source.stream(0),
        epochs=args.steps // args.log_every,
        steps_per_epoch=args.log_every,
        callbacks=[CollapseMonitor(fixed, log=print), curve],
        verbose=0,
    )
    record = {
        "variant": name,
        "settings": settings,
        "configured": configured,
        "batch_size": args.batch_size,
        "chance": 1.0 / (2 * args.batch_size - 1),
        "seed": args.seed,
        "feature_dim": int(encoder.output_shape[-1]),
        "curve": curve.points,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=1)
    return record


def table(records):
    rows = [
        "| variant | steps | loss | contrastive top-1 | projection std x sqrt(D) | projection rank | "
        "feature std x sqrt(D) | feature rank | s/step (incl. start) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        last = r["curve"][-1]
        d = r["settings"]["projection_dim"]
        seconds = last["seconds"] / last["step"]
        rows.append(
            f"| {r['variant']} | {last['step']} | {last['loss']:.3f} | {last['contrastive_accuracy']:.3f} | "
            f"{last['projection_std'] * math.sqrt(d):.2f} | {last['projection_rank']:.1f} | "
            f"{last['feature_std'] * math.sqrt(r.get('feature_dim', 1280)):.2f} | {last['feature_rank']:.1f} | {seconds:.2f} |"
        )
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/unlabeled")
    parser.add_argument("--variants", default="base")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/diagnosis")
    parser.add_argument(
        "--table-only", action="store_true", help="print the table of the JSON files in --out"
    )
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    if args.table_only:
        records = [
            json.load(open(os.path.join(args.out, f"{n}.json")))
            for n in names
            if os.path.exists(os.path.join(args.out, f"{n}.json"))
        ]
    else:
        records = [run_variant(n, args) for n in names]
    print(table(records))


if __name__ == "__main__":
    sys.exit(main())
