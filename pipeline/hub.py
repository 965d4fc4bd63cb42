"""Model hub reachability.

huggingface_hub retries an unreachable host for about a minute before giving up, and only then
falls back to its cache. We probe once: if the hub cannot be reached, switch huggingface_hub to
offline mode so cached weights load at once and missing ones fail at once with our message.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from urllib.parse import urlparse

log = logging.getLogger("lensgraph")

WEIGHTS_HELP = (
    "No weights could be found locally and the model hub is unreachable (or HF_HUB_OFFLINE=1). "
    "Either run once where https://huggingface.co is reachable (weights are cached under HF_HOME), "
    "or copy the files here and point lensgraph at them."
)


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    import huggingface_hub.constants as hub

    if hub.is_offline_mode():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or hub.ENDPOINT)
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError as e:
        log.info("model hub %s unreachable (%s): using cached weights only", host, e)
        return False


def prefer_cache_when_offline() -> None:
    """Put huggingface_hub in offline mode when its endpoint cannot be reached."""
    if not hub_reachable():
        import huggingface_hub.constants as hub

        hub.HF_HUB_OFFLINE = True
