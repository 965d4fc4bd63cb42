"""Model hub reachability.

huggingface_hub retries an unreachable host for about a minute before giving up, and only then
falls back to its cache. We probe first: if the hub cannot be reached, switch huggingface_hub to
offline mode so cached weights load at once and missing ones fail at once with our message.

A long-running server must not stay offline because of one network blip, so a failed probe is
trusted for RECHECK_AFTER seconds only; a later probe that succeeds switches back online. Offline
mode asked for by the user (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) is never undone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from urllib.parse import urlparse

log = logging.getLogger("lensgraph")

WEIGHTS_HELP = (
    "No weights could be found locally and the model hub is unreachable (or HF_HUB_OFFLINE=1). "
    "Either run once where https://huggingface.co is reachable (weights are cached under HF_HOME), "
    "or copy the files here and point lensgraph at them."
)

RECHECK_AFTER = 30.0  # seconds an unreachable hub is believed before it is probed again

_lock = threading.Lock()
_last: tuple[bool, float] | None = None  # (reachable, time.monotonic() of the probe)
_switched_offline = False  # whether offline mode is ours (prefer_cache_when_offline), not the user's


def _offline_requested() -> bool:
    """Offline mode the user asked for: the environment, or huggingface_hub's flag set by anyone but us."""
    import huggingface_hub.constants as hub

    if hub.is_offline_mode() and not _switched_offline:
        return True
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any((os.environ.get(n) or "").upper() in hub.ENV_VARS_TRUE_VALUES for n in names)


def _probe(timeout: float) -> bool:
    import huggingface_hub.constants as hub

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or hub.ENDPOINT)
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError as e:
        log.info("model hub %s unreachable (%s): using cached weights only", host, e)
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's endpoint takes a connection. A success is kept for the process; a failure
    for RECHECK_AFTER seconds (monotonic clock), then the next call probes again."""
    global _last
    if _offline_requested():
        return False
    with _lock:  # concurrent callers share one probe
        if _last is not None and (_last[0] or time.monotonic() - _last[1] < RECHECK_AFTER):
            return _last[0]
        reachable = _probe(timeout)
        _last = (reachable, time.monotonic())
        return reachable


def prefer_cache_when_offline() -> None:
    """Put huggingface_hub in offline mode while its endpoint cannot be reached, and back online
    once a re-check finds it again (only when the offline mode was ours)."""
    global _switched_offline
    import huggingface_hub.constants as hub

    reachable = hub_reachable()
    with _lock:
        if not reachable and not hub.HF_HUB_OFFLINE:
            hub.HF_HUB_OFFLINE = True
            _switched_offline = True
        elif reachable and _switched_offline:
            log.info("model hub reachable again: leaving offline mode")
            hub.HF_HUB_OFFLINE = False
            _switched_offline = False
