"""TFDS builders that fail within seconds offline, for every source that reads a TFDS dataset.

Offline, TFDS retries downloads for minutes before failing; `tfds_builder` checks first whether
the dataset is prepared and, if not, whether the download host answers at all.
"""

import os

# Imported by name, so that tests can replace `tfds_builder.network_available`.
from ssl_keras.data.download_host import network_available
from ssl_keras.data.source_spec import SourceError


def tfds_builder(name, *, context, unknown_hint, offline_hint, data_dir=None):
    """A TFDS builder that is prepared or can be downloaded, decided within a few seconds.

    Offline, TFDS retries downloads for minutes before failing; this checks first whether the
    dataset is already prepared and, if not, whether the download host answers at all.

    Args:
        name: str, TFDS dataset name (with optional config/version).
        context: str, what the error messages start with (the spec or the dataset).
        unknown_hint: str, the fix shown when TFDS does not know the name.
        offline_hint: str, the fix shown when the dataset is unprepared and offline.
        data_dir: str or None, TFDS data dir; None reads `TFDS_DATA_DIR` now (tfds itself
            reads it only once, at import).

    Returns:
        A `tfds.core.DatasetBuilder`, not necessarily prepared yet (but downloadable).

    Raises:
        SourceError: unknown name, or unprepared and the network is unreachable.
    """
    import tensorflow_datasets as tfds  # Slow import, and only TFDS sources need it.

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - tfds raises several types for bad names.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SourceError(
            f"{context}: TFDS cannot build dataset {name!r} ({first_line}); {unknown_hint}"
        ) from error
    if not builder.is_prepared() and not network_available():
        raise SourceError(
            f"{context}: TFDS dataset {name!r} is not prepared in {builder.data_dir} and "
            f"cannot be downloaded offline; {offline_hint}"
        )
    return builder
