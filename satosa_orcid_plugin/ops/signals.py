"""SIGTERM and SIGINT as a stop event, for the long-running commands (the affiliation worker,
``metrics serve``): a container stop (SIGTERM) or Ctrl-C (SIGINT) ends the loop cleanly."""
from __future__ import annotations

import signal
import threading


def stop_event_on_signals(*signals: signal.Signals) -> threading.Event:
    """An event that ``signals`` (default SIGTERM and SIGINT) set. Installs the handlers, so
    call it from the main thread (Python runs signal handlers only there)."""
    stop = threading.Event()
    for sig in signals or (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


__all__ = ["stop_event_on_signals"]
