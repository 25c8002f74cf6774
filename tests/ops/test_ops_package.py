"""The ops/ package: signal handling written once, plugin discovery. (Which modules may import
SATOSA is checked with the rest of the package's shape in tests/unit/test_architecture.py.)"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import satosa_orcid_plugin
from satosa_orcid_plugin.errors import ConfigError
from satosa_orcid_plugin.ops.discovery import find_plugin_entries
from satosa_orcid_plugin.ops.signals import stop_event_on_signals

PACKAGE = Path(satosa_orcid_plugin.__file__).parent
def test_ops_package_import_loads_nothing():
    """``import satosa_orcid_plugin.ops.signals`` (the CLI's and the worker's route into ops/) loads
    no more of SATOSA than the package root does (``errors.py``'s base class)."""
    import subprocess
    import sys

    def satosa_modules(module: str) -> str:
        code = (f"import sys, {module}; "
                "print(sorted(m for m in sys.modules if m == 'satosa' or m.startswith('satosa.')))")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              check=True).stdout.strip()

    assert satosa_modules("satosa_orcid_plugin.ops.signals") == satosa_modules("satosa_orcid_plugin")


def test_stop_event_on_signals_is_set_by_the_signal_and_installs_only_those():
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGUSR2)}
    try:
        stop = stop_event_on_signals(signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR2) == previous[signal.SIGUSR2]
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.wait(5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_stop_event_on_signals_defaults_to_sigterm_and_sigint():
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop = stop_event_on_signals()
        assert all(signal.getsignal(sig) not in (previous[sig], signal.SIG_DFL) for sig in previous)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_missing_micro_service_file_is_named(tmp_path, monkeypatch):
    """It used to say ``file None not found``; an empty micro-service file was "not found" too."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "proxy_conf.yaml").write_text("MICRO_SERVICES:\n  - plugins/orcid.yaml\n")
    with pytest.raises(ConfigError) as info:
        find_plugin_entries(tmp_path / "proxy_conf.yaml")
    assert info.value.problem == "file plugins/orcid.yaml not found"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "orcid.yaml").write_text("")
    with pytest.raises(ConfigError) as info:
        find_plugin_entries(tmp_path / "proxy_conf.yaml")
    assert info.value.key.endswith("MICRO_SERVICES") and "no satosa_orcid_plugin.OrcidConnect entry" in info.value.problem
