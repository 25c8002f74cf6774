"""The demo orchestrator behind ``satosa-orcid demo``.

It builds a :class:`~.layout.DemoLayout` and starts four real processes on loopback:

==========  =====================================================================  =======
emulator    gunicorn ``satosa_orcid_plugin.devstack.emulator:make_app_from_env()``   8090
idp         gunicorn ``satosa_orcid_plugin.devstack.demo_idp:make_app_from_env()``   8091
sp          gunicorn ``satosa_orcid_plugin.devstack.demo_sp:make_app_from_env()``    8092
proxy       gunicorn ``--chdir proxy_conf -w 2 --certfile --keyfile satosa_orcid_plugin.ops.wsgi:app``  8443
==========  =====================================================================  =======

``--port-base N`` moves them to proxy N, emulator N+1, IdP N+2, SP N+3.

Without ``--once`` it prints the URL to open and the demo credentials and serves until
Ctrl-C (or SIGTERM). With ``--once`` it runs one scripted login through the real HTTP
endpoints (a ``requests`` session that trusts the generated TLS cert), prints only
``{"attributes": {...}}`` (what the SP received) on stdout, progress on stderr, and exits 0
only when eduPersonOrcid arrived. ``--journey connect`` plays ORCID's Institutional Connect
first (sign in at the emulator "with your institution" through the proxy's SAML frontend, link
the ORCID account, press "Connect" on ORCID's notification, grant) and then the login. Every process it started is stopped in all cases. Exit status:
0 ok, 1 failure, 2 bad usage or a port already in use (one ``error:`` line naming the port).

    python -m satosa_orcid_plugin.devstack.demo [--once] [--root DIR] [--port-base N] [--journey login|connect]
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from .layout import DemoLayout, DemoPorts

__all__ = [
    "run_demo",
    "main",
    "DemoError",
    "PortInUse",
    "DemoStack",
    "scripted_login",
    "orcid_sign_in",
    "PageWalker",
    "DEMO_ORCID_ID",
    "DEMO_ORCID_PASSWORD",
    "DEFAULT_IDP_USER",
]

DEMO_ORCID_ID = "0000-0002-1825-0097"  # first demo account of the ORCID emulator
DEMO_ORCID_PASSWORD = "orcid-demo"
DEFAULT_IDP_USER = "alice"
ORCID_MS_NAME = "orcid"  # the micro-service's name in proxy_conf/plugins/microservices/orcid.yaml
JOURNEYS = ("login", "connect")
ORCID_ATTRIBUTE = "eduPersonOrcid"
STARTUP_TIMEOUT = 45.0
STOP_TIMEOUT = 10.0


class DemoError(RuntimeError):
    """A failure with a one-line explanation for the user."""


class PortInUse(DemoError):
    pass


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- ports ------------------------------------------------------------------------------
def check_ports_free(ports: DemoPorts, host: str = "127.0.0.1") -> None:
    """Raise :class:`PortInUse` naming the first port that cannot be bound."""
    for name, port in ports.named().items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # Same option gunicorn sets, so a port in TIME_WAIT is not reported as taken.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
                raise PortInUse(
                    f"port {port} ({name}) on {host} {reason}; stop whatever listens there "
                    "or choose other ports with --port-base N"
                ) from None


# --- processes --------------------------------------------------------------------------
@dataclass
class ChildProcess:
    name: str
    port: int
    argv: list[str]
    health_url: str
    log_path: Path
    cwd: Path | None = None
    popen: subprocess.Popen | None = None
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.argv)}\n".encode())
        self._log_file.flush()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: gunicorn master and its workers stop together
        )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        proc = self.popen
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)  # the group we created for this child only
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _gunicorn_supports(flag: str) -> bool:
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:  # pragma: no cover - gunicorn is a dependency
        return False
    return any(flag in (setting.cli or []) for setting in KNOWN_SETTINGS)


def _gunicorn(bind: str, app: str, *extra: str, workers: int = 1) -> list[str]:
    # The image's access log: the path only, never the query string, which carries ORCID
    # authorization codes and OAuth state (ops/gunicorn_conf.py).
    from ..ops.gunicorn_conf import ACCESS_LOG_FORMAT

    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", bind,
        "--workers", str(workers),
        "--threads", "4",
        "--timeout", "60",
        "--graceful-timeout", "5",
        "--access-logfile", "-",
        "--access-logformat", ACCESS_LOG_FORMAT,
    ]
    # Newer gunicorns open a control socket at one fixed path per user; four of them (and
    # any other gunicorn of this user) would fight over it.
    if _gunicorn_supports("--no-control-socket"):
        argv.append("--no-control-socket")
    return [*argv, *extra, app]


class DemoStack:
    """The four demo processes of one layout. Use as a context manager: stops everything."""

    def __init__(self, layout: DemoLayout, *, log: Callable[[str], None] = _log):
        self.layout = layout
        self.log = log
        host, p, logs = layout.host, layout.ports, layout.logs_dir
        self.children: list[ChildProcess] = [
            ChildProcess(
                "emulator", p.emulator,
                _gunicorn(f"{host}:{p.emulator}", "satosa_orcid_plugin.devstack.emulator:make_app_from_env()"),
                f"{layout.emulator_url}/.well-known/openid-configuration", logs / "emulator.log",
            ),
            ChildProcess(
                "idp", p.idp,
                _gunicorn(f"{host}:{p.idp}", "satosa_orcid_plugin.devstack.demo_idp:make_app_from_env()"),
                f"{layout.idp_base}/idp.xml", logs / "idp.log",
            ),
            ChildProcess(
                "sp", p.sp,
                _gunicorn(f"{host}:{p.sp}", "satosa_orcid_plugin.devstack.demo_sp:make_app_from_env()"),
                f"{layout.sp_base}/sp.xml", logs / "sp.log",
            ),
            ChildProcess(
                "proxy", p.proxy,
                _gunicorn(
                    f"{host}:{p.proxy}", "satosa_orcid_plugin.ops.wsgi:app",
                    "--chdir", str(layout.proxy_conf_dir),
                    "--certfile", str(layout.tls_cert),
                    "--keyfile", str(layout.tls_key),
                    workers=2,
                ),
                layout.proxy_idp_entity_id, logs / "proxy.log",
                cwd=layout.proxy_conf_dir,
            ),
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.layout.env())
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        check_ports_free(self.layout.ports, self.layout.host)
        env = self.env()
        for child in self.children:
            self.log(f"starting {child.name} on port {child.port} (log: {child.log_path})")
            child.start(env)
            self._wait_ready(child, timeout)

    def _wait_ready(self, child: ChildProcess, timeout: float) -> None:
        import requests

        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not child.alive():
                tail = child.log_tail()
                if "Address already in use" in tail or "Connection in use" in tail:
                    raise PortInUse(
                        f"port {child.port} ({child.name}) on {self.layout.host} is already in use; "
                        "stop whatever listens there or choose other ports with --port-base N"
                    )
                raise DemoError(
                    f"{child.name} (port {child.port}) exited with status {child.popen.returncode}; "
                    f"see {child.log_path}:\n{tail}"
                )
            try:
                r = requests.get(child.health_url, verify=str(self.layout.tls_cert), timeout=2)
                if r.status_code < 500:
                    self.log(f"{child.name} is up ({child.health_url})")
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise DemoError(
            f"{child.name} (port {child.port}) did not answer within {timeout:.0f}s ({last}); "
            f"see {child.log_path}:\n{child.log_tail()}"
        )

    def check_alive(self) -> None:
        for child in self.children:
            if child.popen is not None and not child.alive():
                raise DemoError(
                    f"{child.name} (port {child.port}) exited with status {child.popen.returncode}; "
                    f"see {child.log_path}"
                )

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.popen is not None:
                child.stop()

    def __enter__(self) -> "DemoStack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- the scripted login -----------------------------------------------------------------
def orcid_sign_in(browser, response, *, orcid_id: str = DEMO_ORCID_ID, password: str = DEMO_ORCID_PASSWORD):
    """On the emulator's sign-in page, sign in as the demo account (first one by default)."""
    from .scripted_browser import find_form

    form = find_form(response.text, response.url, button="Sign in")
    overrides: dict[str, str] = {}
    for name, kind in form.input_types.items():
        if kind == "password":
            overrides[name] = password
        elif kind in ("text", "email"):
            # ORCID pre-fills the email it was given (the institutional one); sign in with
            # the demo account instead.
            overrides[name] = orcid_id
        elif kind == "radio" and name not in form.fields:
            values = form.radios.get(name, [])
            overrides[name] = orcid_id if orcid_id in values else (values[0] if values else "")
    for name, options in form.selects.items():
        if orcid_id in options:
            overrides[name] = orcid_id
        else:
            for option in options:
                if orcid_id in option:
                    overrides[name] = option
    return browser.submit(form, overrides, "Sign in")


class PageWalker:
    """Acts on each page like a person would, until a goal is reached or nothing is left to do.

    Pages are recognised by their forms (button values, not labels, where the label is
    translated): SAML HTTP-POST pages, the demo IdP's sign-in, the ORCID emulator's sign-in
    and consent pages, and the plugin's interstitial ("connect") and confirmation ("yes").
    """

    def __init__(self, layout: DemoLayout, browser, *, user: str = DEFAULT_IDP_USER,
                 orcid_action: str = "Authorize access", interstitial_choice: str = "connect",
                 log: Callable[[str], None] = _log, orcid_id: str = DEMO_ORCID_ID):
        self.layout = layout
        self.browser = browser
        self.user = user
        self.orcid_id = orcid_id
        self.orcid_action = orcid_action
        self.interstitial_choice = interstitial_choice
        self.log = log

    def step(self, r):
        """The response after acting on ``r``'s page, or None when there is nothing to do."""
        from .demo_idp import DEMO_PASSWORD
        from .scripted_browser import BrowserError, find_form, has_button, link_with_id, parse_forms

        layout, b = self.layout, self.browser
        forms = parse_forms(r.text, r.url)
        # An HTTP-POST binding page: SAML fields and nothing for a person to fill in.
        saml = [f for f in forms if ("SAMLResponse" in f.fields or "SAMLRequest" in f.fields)
                and all(kind == "hidden" for kind in f.input_types.values())]
        if saml:
            self.log(f"- SAML HTTP-POST to {saml[0].action}")
            return b.submit(saml[0])
        if r.url.startswith(layout.idp_base) and has_button(r, "Sign in"):
            self.log(f"- institutional IdP: sign in as {self.user}")
            return b.submit_on(r, button="Sign in", overrides={"username": self.user, "password": DEMO_PASSWORD})
        if r.url.startswith(layout.emulator_url):
            if has_button(r, self.orcid_action):
                self.log(f"- ORCID: '{self.orcid_action}'")
                return b.submit_on(r, button=self.orcid_action)
            if has_button(r, "Sign in"):
                self.log(f"- ORCID: sign in as {self.orcid_id}")
                return orcid_sign_in(b, r, orcid_id=self.orcid_id)
            return None
        plugin = f"{layout.proxy_base}/{ORCID_MS_NAME}/"
        connect = link_with_id(r.text, "connect-orcid", r.url) if self.interstitial_choice == "connect" else None
        if connect is not None and r.url.startswith(layout.proxy_base):
            self.log("- proxy interstitial: follow 'Connect your ORCID iD' (a link straight to ORCID)")
            return b.get(connect)
        for value, what in ((self.interstitial_choice, "interstitial"), ("yes", "confirm the pending link")):
            try:
                form = find_form(r.text, r.url, button_value=value, action=plugin)
            except BrowserError:
                continue
            self.log(f"- proxy {what}: choose '{value}'")
            return b.submit(form, None, form.button_with_value(value))
        return None

    def walk(self, r, done: Callable = lambda r: False, max_steps: int = 25):
        for _ in range(max_steps):
            if done(r):
                return r
            following = self.step(r)
            if following is None:
                return r
            r = following
        raise DemoError(f"gave up after {max_steps} pages (at {r.url})")


def _at_sp_result(layout: DemoLayout):
    from .demo_sp import RELEASED_ATTRIBUTES_ID

    return lambda r: r.url.startswith(layout.sp_base) and RELEASED_ATTRIBUTES_ID in r.text


def scripted_login(layout: DemoLayout, *, user: str = DEFAULT_IDP_USER, log: Callable[[str], None] = _log,
                   orcid_action: str = "Authorize access", journey: str = "login", browser=None) -> dict:
    """Log in at the demo SP through the proxy, the demo IdP and the ORCID emulator.

    ``journey="connect"`` first plays ORCID's Institutional Connect: the researcher signs in
    at ORCID (the emulator) "with your institution", i.e. through the proxy's SAML frontend
    and the IdP (the proxy sees an ORCID requester: no hop, the sign-in marker is set), links
    the demo ORCID account, presses "Connect" on ORCID's notification (the state-less authorize
    URL), grants, and ORCID sends the browser to the proxy's ``orcid/connect``, which verifies
    and binds the iD on the spot ("Your ORCID iD is connected"). The login that follows gets
    the iD without any ORCID step.
    Returns the JSON the SP page embeds (``{"attributes": ..., "attribute_names": ...}``).
    """
    from .demo_sp import extract_released
    from .scripted_browser import BrowserError, ScriptedBrowser

    browser = browser or ScriptedBrowser(verify=str(layout.tls_cert), log=log)
    walker = PageWalker(layout, browser, user=user, orcid_action=orcid_action, log=log)
    if journey == "connect":
        log(f"Institutional Connect: sign in at ORCID ({layout.emulator_url}/signin) through the institution")
        r = browser.get(f"{layout.emulator_url}/signin")
        r.raise_for_status()
        log("- ORCID: 'Sign in with your institution'")
        r = browser.follow_link(r, "Sign in with your institution")
        at_notification = _at_connect_notification(layout)
        r = walker.walk(r, at_notification)
        if not at_notification(r):
            raise BrowserError(f"expected ORCID's connect notification, got {r.status_code} at {r.url}: {_title(r.text)!r}")
        log("- ORCID's notification 'Connecting your institutional account': 'Connect'")
        r = browser.get(_connect_button_url(r))
        r = walker.walk(r)
        if not r.url.startswith(layout.proxy_base) or r.status_code != 200:
            raise BrowserError(f"Institutional Connect ended at {r.status_code} {r.url}: {_title(r.text)!r}")
        log(f"- the proxy says: {_title(r.text)!r}")
    elif journey != "login":
        raise ValueError(f"unknown journey {journey!r}")
    log(f"Login at the demo SP {layout.sp_base}/")
    r = browser.get(f"{layout.sp_base}/")
    r.raise_for_status()
    log("- 'Log in through the proxy'")
    r = browser.follow_link(r, "Log in through the proxy")
    r = walker.walk(r, _at_sp_result(layout))
    if not _at_sp_result(layout)(r):
        raise BrowserError(f"expected the SP's result page, got {r.status_code} at {r.url}: {_title(r.text)!r}")
    return extract_released(r.text)


def _at_connect_notification(layout: DemoLayout):
    return lambda r: r.url.startswith(layout.emulator_url) and 'id="connect-institution"' in r.text


def _connect_button_url(r) -> str:
    """The href of the "Connect" button of ORCID's notification (it opens in a new tab)."""
    from urllib.parse import urljoin

    from .scripted_browser import parse_html

    link = parse_html(r.text).find("a", id="connect-institution")
    return urljoin(r.url, link["href"])


def _title(page: str) -> str:
    from .scripted_browser import parse_html

    tag = parse_html(page).find(["h1", "title"])
    return tag.get_text(" ", strip=True) if tag else ""


# --- entry points -----------------------------------------------------------------------
def _banner(layout: DemoLayout, journey: str = "login") -> str:
    from .demo_idp import DEMO_PASSWORD, DEMO_USERS

    users = ", ".join(DEMO_USERS)
    if journey == "connect":
        start = [
            "satosa-orcid demo is running (Institutional Connect). Start on the ORCID side:",
            "",
            f"    {layout.emulator_url}/signin",
            "",
            "  1. 'Sign in with your institution' (ORCID sends you through the proxy to the demo IdP)",
            f"  2. sign in at the demo IdP, then link the ORCID account {DEMO_ORCID_ID}",
            "  3. press 'Connect' on ORCID's notification and authorize: the proxy shows",
            "     'Your ORCID iD is connected'",
            f"  4. then log in at the demo service {layout.sp_base}/ : eduPersonOrcid arrives without an ORCID step",
        ]
    else:
        start = ["satosa-orcid demo is running. Open the demo service in a browser:", "", f"    {layout.sp_base}/"]
    return "\n".join(
        [
            "",
            *start,
            "",
            f"  Institutional login (demo IdP): {users} / password {DEMO_PASSWORD}",
            f"  ORCID sign-in (emulator):       {DEMO_ORCID_ID} / password {DEMO_ORCID_PASSWORD}",
            f"  Institutional Connect:          {layout.emulator_url}/signin -> 'Sign in with your institution'",
            f"  Proxy:    {layout.proxy_base} (self-signed certificate {layout.tls_cert};",
            "            accept it in the browser, or trust that file)",
            f"  Emulator: {layout.emulator_url}   IdP: {layout.idp_base}   SP: {layout.sp_base}",
            f"  Logs:     {layout.logs_dir}",
            "",
            "Press Ctrl-C to stop.",
            "",
        ]
    )


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT (even when inherited as ignored, e.g. from ``cmd &``) stop the demo."""

    def handler(signum, frame):
        raise KeyboardInterrupt()

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def own_proxy_layout(root: Path, ports: DemoPorts, proxy_conf: Path) -> DemoLayout:
    """The layout around a deployment's own proxy configuration (``--proxy-conf``): the demo
    IdP, SP and emulator are generated as usual, the proxy is the deployment's. Its relative
    paths resolve from its directory (as when SATOSA runs there), its SAML frontend must be
    named Saml2IDP and its backend Saml2 (SATOSA's example names), and BASE must be the
    address the demo serves the proxy at."""
    from .layout import BACKEND_NAME, FRONTEND_NAME

    proxy_conf = Path(proxy_conf).absolute()
    conf_dir = proxy_conf if proxy_conf.is_dir() else proxy_conf.parent
    if not (conf_dir / "proxy_conf.yaml").is_file() or (proxy_conf.is_file() and proxy_conf.name != "proxy_conf.yaml"):
        raise DemoError(f"--proxy-conf {proxy_conf}: give a proxy_conf.yaml (or its directory)")
    root = Path(root).resolve()
    with contextlib.chdir(conf_dir):
        try:
            layout = DemoLayout(root, ports, proxy_conf_dir=conf_dir)
        except KeyError as exc:
            raise DemoError(f"--proxy-conf: the demo needs a SAML frontend named {FRONTEND_NAME} and a SAML backend "
                            f"named {BACKEND_NAME} (no {exc})") from None
        base = str(layout.proxy_config(micro_services=False).get("BASE", "")).rstrip("/")
    if base != layout.proxy_base:
        raise DemoError(f"--proxy-conf: BASE is {base!r} but the demo serves the proxy at {layout.proxy_base}; "
                        "set BASE to that (or choose the port with --port-base)")
    return layout


def run_demo(root: Path, ports: DemoPorts, once: bool, journey: str = "login",
             proxy_conf: Path | None = None) -> int:
    """Run the demo; returns the process exit status. See the module docstring.
    ``proxy_conf``: run the deployment's own proxy configuration instead of the shipped one."""
    if journey not in JOURNEYS:
        _log(f"error: unknown journey {journey!r} (choose from {', '.join(JOURNEYS)})")
        return 2
    try:
        check_ports_free(ports)
        _log(f"preparing keys, metadata and secrets in {Path(root).resolve()}")
        layout = own_proxy_layout(root, ports, proxy_conf) if proxy_conf else DemoLayout(Path(root), ports)
    except DemoError as exc:
        _log(f"error: {exc}")
        return 2
    if proxy_conf:
        _log(f"your proxy ({layout.proxy_conf_dir}) must trust the demo SP ({layout.sp_metadata}, in its SAML "
             f"frontend's metadata) and the demo IdP ({layout.idp_metadata}, in its SAML backend's metadata); "
             f"the plugin gets the emulator's client and a demo link store through the environment")
    with _sigterm_as_interrupt():
        stack = DemoStack(layout)
        try:
            stack.start()
            if once:
                released = scripted_login(layout, journey=journey)
                attributes = released.get("attributes", {})
                print(json.dumps({"attributes": attributes}, sort_keys=True), flush=True)
                if attributes.get(ORCID_ATTRIBUTE):
                    _log(f"ok: the SP received {ORCID_ATTRIBUTE} {attributes[ORCID_ATTRIBUTE]}")
                    return 0
                _log(f"error: the SP received no {ORCID_ATTRIBUTE} (see {layout.logs_dir}/proxy.log)")
                return 1
            print(_banner(layout, journey), flush=True)
            while True:
                time.sleep(0.5)
                stack.check_alive()
        except KeyboardInterrupt:
            _log("stopping...")
            return 0 if not once else 130
        except PortInUse as exc:
            _log(f"error: {exc}")
            return 2
        except DemoError as exc:
            _log(f"error: {exc}")
            return 1
        except Exception as exc:  # the scripted browser or an unexpected page
            _log(f"error: {type(exc).__name__}: {exc} (logs in {layout.logs_dir})")
            return 1
        finally:
            stack.stop()


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    # pysaml2 imports a cipher mode that cryptography deprecates; not actionable here.
    warnings.filterwarnings("ignore", message=".*CFB has been moved.*")
    parser = argparse.ArgumentParser(
        prog="satosa-orcid demo",
        description="Run the ORCID emulator, a demo IdP, the SATOSA proxy and a demo SP on loopback.",
    )
    parser.add_argument("--once", action="store_true",
                        help="run one scripted login, print the SP's attributes as JSON, stop")
    parser.add_argument("--root", default="demo-data", help="where keys, metadata and data are generated")
    parser.add_argument("--port-base", type=int, default=None,
                        help="proxy N, emulator N+1, IdP N+2, SP N+3 (default 8443, 8090, 8091, 8092)")
    parser.add_argument("--proxy-conf", default=None,
                        help="run your own proxy_conf.yaml instead of the shipped one (see the README, "
                             "'Test against your own IdP/SP')")
    parser.add_argument("--journey", choices=JOURNEYS, default="login",
                        help="login (the ORCID hop during a login) or connect (ORCID Institutional "
                             "Connect first: institutional sign-in at ORCID through the proxy, connect, "
                             "grant; then a login). Without --once it says where each journey starts")
    args = parser.parse_args(argv)
    try:
        ports = DemoPorts.from_base(args.port_base) if args.port_base is not None else DemoPorts()
    except ValueError as exc:
        parser.error(str(exc))
    return run_demo(Path(args.root), ports, args.once, args.journey,
                    Path(args.proxy_conf) if args.proxy_conf else None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
