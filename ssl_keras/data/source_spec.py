"""Source specs, the one string that names a data source, and the error every source raises.

`parse_source` reads the spec without touching the disk or the network; the loaders
(`unlabeled_images.py`, `localization.py`, `labelled_images.py`, `voc.py`) share `SourceError`
and the checks below, so this module imports none of them.

Spec forms:

- `synthetic` or `synthetic:N`: the embedded procedural set (`N` images, default 512).
- `tfds:NAME[:SPLIT]`: a TensorFlow Datasets dataset (split defaults to `train`; `NAME` may
  carry a config and version, `tfds:cifar10:3.0.2:test`).
- `voc:PATH[:SPLIT]`: a VOCdevkit year folder (`.../VOC2007`) and an optional image set.
- anything else: a folder path.
"""

import dataclasses
import os
import re


DEFAULT_SYNTHETIC_IMAGES = 512
DEFAULT_TFDS_SPLIT = "train"
SPEC_FORMS = "synthetic[:N], tfds:NAME[:SPLIT], voc:PATH[:SPLIT] or a folder path"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]+):")
# A TFDS version right after the name ("3.0.2", "3.*.*") belongs to the name, not the split.
_TFDS_SPEC = re.compile(r"^(?P<name>[^:]+(?::\d+(?:\.(?:\d+|\*)){0,2})?)(?::(?P<split>.+))?$")


class SourceError(ValueError):
    """A source spec that cannot be used; the message names the input and the fix."""


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec.

    Attributes:
        kind: str, one of `"synthetic"`, `"tfds"`, `"voc"`, `"folder"`.
        spec: str, the spec as given.
        path: str or None, the folder (voc, folder).
        name: str or None, the TFDS dataset name (tfds).
        split: str or None, the TFDS split or VOC image set.
        num_images: int or None, the synthetic set size.
    """

    kind: str
    spec: str
    path: str | None = None
    name: str | None = None
    split: str | None = None
    num_images: int | None = None


def parse_source(spec):
    """Parses a source spec string, without touching the disk or the network.

    Args:
        spec: str, one of `synthetic[:N]`, `tfds:NAME[:SPLIT]`, `voc:PATH[:SPLIT]` or a
            folder path.

    Returns:
        A `SourceSpec`.

    Raises:
        SourceError: the spec is empty, malformed, or uses an unknown scheme.

    Example:

    >>> parse_source("voc:data/VOC2007:train")
    SourceSpec(kind='voc', spec='voc:data/VOC2007:train', path='data/VOC2007', name=None, split='train', num_images=None)
    """
    spec = os.fspath(spec)
    text = spec.strip()
    if not text:
        raise SourceError(f"empty source spec; use {SPEC_FORMS}")
    if text == "synthetic" or text.startswith("synthetic:"):
        count = text[len("synthetic:") :] if ":" in text else ""
        if not count:
            return SourceSpec("synthetic", spec, num_images=DEFAULT_SYNTHETIC_IMAGES)
        if not count.isdigit() or int(count) <= 0:
            raise SourceError(
                f"source {spec!r}: N in synthetic:N must be a positive integer, "
                f"e.g. synthetic:1024. Received: N={count!r}"
            )
        return SourceSpec("synthetic", spec, num_images=int(count))
    if text.startswith("tfds:"):
        match = _TFDS_SPEC.match(text[len("tfds:") :])
        if not match or not match.group("name").strip():
            raise SourceError(
                f"source {spec!r}: expected tfds:NAME[:SPLIT], e.g. tfds:cifar10:train"
            )
        return SourceSpec(
            "tfds",
            spec,
            name=match.group("name"),
            split=match.group("split") or DEFAULT_TFDS_SPLIT,
        )
    if text.startswith("voc:"):
        rest = text[len("voc:") :]
        path, split = rest, None
        head, sep, last = rest.rpartition(":")
        # "voc:C:\\data\\VOC2007" keeps its drive letter: a split has no path separator and
        # never follows a one-letter head.
        if sep and len(head) > 1 and last and not re.search(r"[\\/]", last):
            path, split = head, last
        if not path:
            raise SourceError(
                f"source {spec!r}: expected voc:PATH[:SPLIT], e.g. voc:VOCdevkit/VOC2007:train"
            )
        return SourceSpec("voc", spec, path=path, split=split)
    scheme = _SCHEME.match(text)
    if scheme and not os.path.exists(text):
        raise SourceError(
            f"source {spec!r}: unknown scheme {scheme.group(1)!r} and no such folder; "
            f"use {SPEC_FORMS}"
        )
    return SourceSpec("folder", spec, path=text)


def check_batch_size(num_images, batch_size, what):
    if batch_size <= 0:
        raise SourceError(f"batch_size must be > 0. Received: batch_size={batch_size}")
    if num_images < batch_size:
        raise SourceError(
            f"{what} has {num_images} usable images, fewer than one batch of {batch_size}; "
            "lower the batch size or add images"
        )


def existing_folder(path, spec, what):
    """Raises `SourceError` unless `path` is an existing folder; `what` names it in the message."""
    if not os.path.exists(path):
        raise SourceError(
            f"source {spec!r}: {what} {path} does not exist; check the path "
            f"(relative paths start at {os.getcwd()})"
        )
    if not os.path.isdir(path):
        raise SourceError(f"source {spec!r}: {path} is a file; give the folder that holds it")
