"""Fixtures and options of the operations tests (fault matrix, fuzzing, load, entrypoint).

``--slow`` (or ``SATOSA_ORCID_SLOW=1``) runs the fuzzers with the ``slow`` hypothesis profile
(ten times the examples); the default is the ``ci`` profile (thousands of examples in all).
The option is registered here, so pytest only knows it when this directory is named on the
command line: ``pytest tests/ops --slow``; from the top (``make test``) use the variable.

The deployment is the flow tests' (``tests/flows/flowkit.py``): a :class:`DemoLayout` with
free loopback ports, the real ``proxy_conf/``, SATOSA's real WSGI app, in-process demo SP and
IdP (pysaml2) and the ORCID emulator on loopback. Here it is built once per test module
(``ops_deployment(tmp_path_factory, ...)``) because each build costs about a second.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# per endpoint in CI: 4 endpoints -> 2,000 requests through the real app (each costs SATOSA
# about 35 ms, most of it compressing its state cookie with LZMA)
FUZZ_EXAMPLES = int(os.environ.get("SATOSA_ORCID_FUZZ_EXAMPLES", "500"))

settings.register_profile(
    "ci", max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "slow", max_examples=FUZZ_EXAMPLES * 10, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="tests/ops: fuzz with ten times the examples (hypothesis profile 'slow')")


def fuzz_settings(config: pytest.Config) -> settings:
    """The hypothesis settings of the fuzzers: profile ``slow`` with ``--slow`` or
    SATOSA_ORCID_SLOW=1, else ``ci``. Applied per test (never loaded globally, so the other
    property tests of the suite keep their own settings)."""
    slow = os.environ.get("SATOSA_ORCID_SLOW") == "1"
    try:
        slow = slow or bool(config.getoption("--slow"))
    except ValueError:  # the option is registered only when tests/ops is given on the command line
        pass
    return settings.get_profile("slow" if slow else "ci")


OPS_REPORT: list[str] = []  # lines for the test summary (e.g. the load test's logins/s)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if OPS_REPORT:
        terminalreporter.section("satosa-orcid ops")
        for line in OPS_REPORT:
            terminalreporter.write_line(line)


def _load_flows_helpers() -> Any:
    """tests/flows/flowkit.py as a module of its own (its helpers, not its fixtures)."""
    name = "satosa_orcid_flows_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "flows" / "flowkit.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


flows = _load_flows_helpers()
html_form_fields = flows.html_form_fields
path_and_query = flows.path_and_query
start_login_via = flows.start_login_via
idp_respond_via = flows.idp_respond_via
sp_receive = flows.sp_receive


orcid_consent = flows.orcid_consent_via


def plugin_config(satosa_config: Any) -> dict:
    return next(m for m in satosa_config["MICRO_SERVICES"] if m["name"] == "orcid")["config"]


@dataclass
class Deployment:
    """One demo deployment: layout, environment, emulator, SATOSA config; apps built on demand."""

    layout: Any
    env: dict[str, str]
    config: Any
    emulator: Any
    sp: Any
    idp: Any
    apps: dict[str, Any] = field(default_factory=dict)

    def app(self, **changes: Any) -> Any:
        """The production WSGI app (SATOSA behind the request guard) with the plugin config
        ``changes`` applied (e.g. ``on_error="fail"``); built once per distinct change set."""
        from satosa_orcid_plugin.ops.wsgi import create_app

        key = repr(sorted(changes.items()))
        if key not in self.apps:
            config = copy.deepcopy(self.config)
            merged = plugin_config(config)
            for k, v in changes.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            self.apps[key] = create_app(config)
        return self.apps[key]

    def client(self, **changes: Any) -> Any:
        from werkzeug.test import Client

        return Client(self.app(**changes))

    def store(self) -> Any:
        from satosa_orcid_plugin.store import Store
        from satosa_orcid_plugin.tokens import TokenCipher

        return Store.from_url(self.env["SATOSA_ORCID_DATABASE_URL"],
                              TokenCipher.from_keys(self.env["SATOSA_ORCID_TOKEN_KEYS"].split(",")))

    def links(self) -> list[Any]:
        store = self.store()
        try:
            return store.links.recent(limit=10000)
        finally:
            store.db.dispose()


def interstitial(deployment: Deployment, client: Any, user: str = "alice") -> tuple[str, dict[str, str]]:
    """Run a login to the interstitial; its form's action and fields (with the form's token)."""
    request = start_login_via(client, deployment.sp)
    response = idp_respond_via(client, deployment.idp, request, user)
    assert response.status_code == 200, response.status
    return html_form_fields(response.get_data(as_text=True))


def hop(deployment: Deployment, client: Any, user: str = "alice") -> str:
    """Run a login to the interstitial, follow its 'Connect' link: the ORCID authorize URL."""
    from satosa_orcid_plugin.devstack.scripted_browser import link_with_id

    request = start_login_via(client, deployment.sp)
    response = idp_respond_via(client, deployment.idp, request, user)
    assert response.status_code == 200, response.status
    url = link_with_id(response.get_data(as_text=True), "connect-orcid")
    assert url, response.get_data(as_text=True)[:300]
    return url


@contextlib.contextmanager
def deployment_context(root: Path, keys: Path, **env_changes: str) -> Iterator[Deployment]:
    """Build a deployment under ``root`` and apply its environment and working directory for
    as long as the context lasts (module-scoped fixtures use this instead of monkeypatch)."""
    from satosa.satosa_config import SATOSAConfig

    from satosa_orcid_plugin.devstack import emulator as emulator_module
    from satosa_orcid_plugin.devstack.demo_idp import DemoIdP
    from satosa_orcid_plugin.devstack.demo_sp import DemoSP
    from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

    layout = DemoLayout(root, DemoPorts.free(), keys_from=keys)
    env = {**layout.env(), **env_changes}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.chdir(layout.proxy_conf_dir)
        config = SATOSAConfig("proxy_conf.yaml")
        config["LOGGING"] = {"version": 1, "disable_existing_loggers": False}
        emulator = emulator_module.Emulator(
            layout.emulator_url, clients=[emulator_module.ClientRegistration(**c) for c in layout.emulator_clients()])
        server = emulator_module.serve_in_thread(emulator, layout.host, port=layout.ports.emulator)
        try:
            yield Deployment(layout, env, config, emulator, DemoSP(layout), DemoIdP(layout))
        finally:
            server.stop()


@pytest.fixture(scope="session")
def ops_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from satosa_orcid_plugin.devstack.pki import generate_demo_pki

    directory = tmp_path_factory.mktemp("ops-keys")
    generate_demo_pki(directory)
    return directory


@pytest.fixture(scope="module")
def ops_deployment(tmp_path_factory: pytest.TempPathFactory, ops_keys: Path) -> Iterator[Deployment]:
    with deployment_context(tmp_path_factory.mktemp("ops") / "deployment", ops_keys) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def ops_postgres_url() -> Iterator[str]:
    from pgschema import private_schema  # skips, or fails when services are required

    with private_schema("ops") as url:
        yield url


def callback_path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
