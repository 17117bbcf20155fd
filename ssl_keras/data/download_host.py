"""Whether the download host answers: one probe for TFDS datasets and `keras.applications` weights.

Both download from Google Cloud Storage, and both retry for minutes before failing offline, so
the callers ask first, within a few seconds.
"""

import socket

DOWNLOAD_HOST = ("storage.googleapis.com", 443)
"""`(host, port)` that TFDS and `keras.applications` download from."""


def network_available(*, timeout=3.0):
    """Whether `DOWNLOAD_HOST` accepts a connection within `timeout` seconds.

    Args:
        timeout: float, seconds to wait for the connection. Defaults to 3.

    Returns:
        bool.
    """
    try:
        with socket.create_connection(DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False
