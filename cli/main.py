"""The `ssl-keras` command line: thin click wrappers over the library.

Each command builds a config dataclass, calls one library function, and turns expected user
errors into `click.ClickException` (one line, exit code 1, no traceback).
"""

import datetime
import functools
import os

import click

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) is noise for CLI users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ssl_keras.cli.options import options_from

PRETRAIN_HELP = {
    "data": "Image source: a folder of images, voc:PATH[:SPLIT], tfds:NAME[:SPLIT] or synthetic[:N].",
    "out": "Run directory (must be new or empty, unless --resume).",
    "backbone": "keras.applications backbone name (or 'tiny' for smoke tests).",
    "backbone_weights": "Initial backbone weights: 'imagenet' or a local weights file.",
    "epochs": "Number of epochs (>= 1).",
    "batch_size": "Images per batch; each gives two views (>= 2).",
    "image_size": "Square side images are resized to (>= 32).",
    "temperature": "NT-Xent temperature (> 0).",
    "projection_dim": "Output size of the projection head.",
    "projection_hidden_dim": "Hidden width of the projection head (default: encoder width).",
    "projection_layers": "Dense layers in the projection head.",
    "optimizer": "auto (AdamW below batch 1024, else LARS), adamw, lars or lamb.",
    "learning_rate": "Peak learning rate (default: scaled with batch size per optimizer).",
    "weight_decay": "Weight decay (default per optimizer; never on biases or BatchNorm).",
    "warmup_epochs": "Linear warm-up length in epochs, then cosine decay.",
    "jitter_strength": "Colour-jitter strength s of the SimCLR augmentation.",
    "steps_per_epoch": "Steps per epoch (default: one pass over the data).",
    "seed": "Run seed; all other seeds are derived from it and saved in config.json.",
    "resume": "Continue the run in --out from its last checkpoint.",
    "mixed_precision": "Train in mixed float16 (loss still computed in float32).",
    "export": "Write encoder_savedmodel/ (TensorFlow backend only).",
}


def _user_errors():
    from ssl_keras.backbone import BackboneWeightsError
    from ssl_keras.config import ConfigError
    from ssl_keras.data.sources import SourceError
    from ssl_keras.export import ExportError
    from ssl_keras.run_directory import RunDirectoryError

    return (BackboneWeightsError, ConfigError, SourceError, ExportError, RunDirectoryError)


def user_errors_as_click(command):
    """Reports the library's expected errors as one line instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _user_errors() as error:
            raise click.ClickException(str(error)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ssl_keras")
def main():
    """ssl-keras: SimCLR pretraining on unlabeled images, transfer to object localization.

    Images are read as float RGB in [0, 255]; every run writes config.json and result JSON
    next to its checkpoints.
    """


@main.command()
@options_from(__import__("ssl_keras.config", fromlist=["PretrainConfig"]).PretrainConfig, PRETRAIN_HELP)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="JSON or YAML file of option values; options given here override it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors_as_click
def pretrain(config_file, quiet, **options):
    """SimCLR pretraining of a backbone on unlabeled images.

    Example: ssl-keras pretrain --data ../shared/data/unlabeled --out runs/p1 --epochs 1
    --image-size 96 --batch-size 64
    """
    from ssl_keras.config import PretrainConfig, build_config
    from ssl_keras.pretrain import run_pretrain

    config = build_config(PretrainConfig, config_file=config_file, **options)
    result = run_pretrain(config, verbose=0 if quiet else 1, log=click.echo)
    _print_pretrain_result(result)


def _print_pretrain_result(result):
    click.echo(
        f"pretrain done: {result['epochs']} epoch(s), loss {result['loss']:.4f}, contrastive accuracy "
        f"{result['contrastive_accuracy']:.3f}, {result['images_per_second']:.1f} images/s"
    )
    for name, path in result["outputs"].items():
        if path:
            click.echo(f"  {name}: {path}")


@main.command()
@click.option("--out", default=None, help="Demo output folder [default: runs/demo-TIMESTAMP].")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--backbone", default="EfficientNetB1", show_default=True)
@user_errors_as_click
def demo(out, epochs, backbone):
    """Runs the pipeline on the embedded synthetic dataset (no network, a few minutes on CPU)."""
    from ssl_keras.config import PretrainConfig, build_config
    from ssl_keras.pretrain import run_pretrain

    out = out or os.path.join("runs", "demo-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    config = build_config(PretrainConfig, data="synthetic:512", out=os.path.join(out, "pretrain"),
                          backbone=backbone, epochs=epochs, batch_size=32, image_size=64,
                          warmup_epochs=1.0, temperature=0.2)
    click.echo(f"[demo] SimCLR pretraining on synthetic scenes -> {config.out}")
    result = run_pretrain(config, log=click.echo)
    _print_pretrain_result(result)
    click.echo(f"[demo] outputs are in {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
