"""Row family 4: logins/s under gunicorn, with vs without the plugin, and peak RSS per worker.

Two proxies run side by side on loopback, started exactly like the demo's proxy
(``satosa_orcid_plugin.devstack.demo``: gunicorn, 2 workers x 4 threads, HTTPS with the
layout's self-signed certificate, proxy_conf/ as working directory, the real LOGGING to a log
file, access log on): A loads the plugin, B is the same configuration without the ``orcid``
micro-service (``bench/wsgi_app.py``). Both are configured with the same public base URL
(SATOSA_BASE, so the same SAML metadata and entity ids); B just listens on another port and
the load generator sends each request to the port of the variant under test. Full runs add a
second proxy without the plugin as an A/A control. HTTPS is kept,
so the Secure state cookie behaves as in production (COOKIE_SECURE is left on).

The load generator runs in this process: N threads, each a "browser" (requests.Session
trusting the certificate) with its own demo SP and IdP (pysaml2; the IdP signs with xmlsec1).
It competes with the proxies for the same 2 cores, equally for A and B. Users are linked, so
A takes the plugin's fast path. Rounds alternate A B B A ..., each bounded in logins and
seconds; logins/s of a round = completed logins / round wall time. Afterwards one response
per round is verified by the SP (eduPersonOrcid present with the plugin, absent without).
Peak RSS is VmHWM of each worker process, read from /proc after the last round.
"""
from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

from .common import (
    ORCID_ATTRIBUTE,
    Deployment,
    Row,
    Summary,
    form_fields,
    progress,
    target_row,
)

NAME = "throughput"
ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
CLIENT_THREADS = 4


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proxy:
    variant: str
    port: int
    popen: subprocess.Popen
    log_path: Path
    idle_rss_kb: list[int] = field(default_factory=list)
    rss_samples_kb: dict[int, list[int]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """PIDs of the gunicorn workers (children of the master)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.popen.pid:
                pids.append(int(entry.name))
        return pids

    def cpu_seconds(self) -> float:
        """CPU of the workers so far, with the xmlsec1 processes they ran and reaped."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.workers():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return total / tick

    @staticmethod
    def status_kb(pid: int, field_name: str) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise KeyError(field_name)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)  # the session we created for it
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)


@contextlib.contextmanager
def gunicorn_proxy(deployment: Deployment, variant: str, port: int,
                   extra_env: dict[str, str] | None = None, *, threads: int = 4) -> Iterator[Proxy]:
    import requests

    from satosa_orcid_plugin.devstack.demo import _gunicorn

    layout = deployment.layout
    argv = _gunicorn(
        f"127.0.0.1:{port}", "bench.wsgi_app:app",
        "--chdir", str(layout.proxy_conf_dir),
        "--pythonpath", str(ROOT),
        "--certfile", str(layout.tls_cert),
        "--keyfile", str(layout.tls_key),
        *(("--threads", "1", "--worker-class", "sync") if threads == 1 else ("--threads", str(threads))),
        workers=WORKERS,
    )
    env = {**os.environ, **deployment.env, "PYTHONUNBUFFERED": "1",
           "BENCH_WITH_PLUGIN": "1" if variant == "plugin" else "0", **(extra_env or {})}
    log_path = deployment.root / f"gunicorn-{variant}.log"
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(argv, cwd=layout.proxy_conf_dir, env=env, stdin=subprocess.DEVNULL,
                                 stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    proxy = Proxy(variant, port, popen, log_path)
    try:
        deadline = time.monotonic() + 60
        health = f"{proxy.base}/Saml2IDP/proxy.xml"
        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"gunicorn ({variant}) exited {popen.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-1500:]}")
            try:
                if requests.get(health, verify=str(layout.tls_cert), timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn ({variant}) did not answer within 60 s; see {log_path}")
            time.sleep(0.2)
        # both workers up (each loads the app itself: no --preload, as in the demo)
        while len(proxy.workers()) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # let both workers finish loading the app
        proxy.idle_rss_kb = [Proxy.status_kb(pid, "VmRSS") for pid in proxy.workers()]
        yield proxy
    finally:
        proxy.stop()


class Browser:
    """One simulated user agent: cookies, TLS trust, and its own demo SP and IdP."""

    def __init__(self, deployment: Deployment):
        from satosa_orcid_plugin.devstack.demo_idp import DemoIdP
        from satosa_orcid_plugin.devstack.demo_sp import DemoSP

        self.layout = deployment.layout
        self.sp = DemoSP(self.layout)
        self.idp = DemoIdP(self.layout)

    @staticmethod
    def rebase(url: str, base: str) -> str:
        parts, target = urlsplit(url), urlsplit(base)
        return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))

    def login(self, proxy: Proxy, user: str) -> str:
        from saml2 import BINDING_HTTP_REDIRECT

        import requests

        # A new browser per login (own cookies, own TLS connection): different researchers
        # log in, and gunicorn's workers share the connections as they do in production.
        session = requests.Session()
        _rid, url = self.sp.authn_request(relay_state="/protected")
        # verify= on every request: a session-level verify loses to $REQUESTS_CA_BUNDLE
        tls = str(self.layout.tls_cert)
        r = session.get(self.rebase(url, proxy.base), allow_redirects=False, timeout=30, verify=tls)
        if r.status_code not in (302, 303):
            raise AssertionError(f"{proxy.variant} SSO: {r.status_code} {r.text[:200]}")
        query = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["Location"]).query).items()}
        destination, fields = self.idp.respond(query["SAMLRequest"], query.get("RelayState"), BINDING_HTTP_REDIRECT,
                                               user, sigalg=query.get("SigAlg"), signature=query.get("Signature"))
        r = session.post(self.rebase(destination, proxy.base), data=fields, allow_redirects=False, timeout=30,
                         verify=tls)
        if r.status_code != 200 or "SAMLResponse" not in r.text:
            raise AssertionError(f"{proxy.variant} ACS: {r.status_code} {r.text[:200]}")
        session.close()
        return r.text


@dataclass
class RoundResult:
    variant: str
    completed: int
    elapsed: float
    started: float = field(default_factory=time.monotonic)
    cpu: float = 0.0  # CPU seconds the proxy's workers (and their xmlsec1 children) used
    latencies: list[float] = field(default_factory=list)
    sample: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed if self.elapsed else 0.0


def run_round(proxy: Proxy, browsers: list[Browser], max_logins: int, max_seconds: float) -> RoundResult:
    users = ("alice", "bob", "carol")
    lock = threading.Lock()
    result = RoundResult(proxy.variant, 0, 0.0)
    started = [0]
    deadline = time.monotonic() + max_seconds

    def worker(index: int, browser: Browser) -> None:
        while True:
            with lock:
                if started[0] >= max_logins or time.monotonic() >= deadline or result.errors:
                    return
                n = started[0]
                started[0] += 1
            t0 = time.perf_counter()
            try:
                page = browser.login(proxy, users[n % len(users)])
            except Exception as exc:
                with lock:
                    result.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                return
            with lock:
                result.latencies.append(time.perf_counter() - t0)
                result.completed += 1
                if result.sample is None:
                    result.sample = page

    done = threading.Event()

    def sample_rss() -> None:  # RSS of each worker while it is under load
        while not done.wait(0.25):
            for pid in proxy.workers():
                with contextlib.suppress(OSError, KeyError):
                    proxy.rss_samples_kb.setdefault(pid, []).append(Proxy.status_kb(pid, "VmRSS"))

    threads = [threading.Thread(target=worker, args=(i, b), daemon=True) for i, b in enumerate(browsers)]
    sampler = threading.Thread(target=sample_rss, daemon=True)
    cpu0 = proxy.cpu_seconds()
    t0 = time.perf_counter()
    sampler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max_seconds + 60)
    result.elapsed = time.perf_counter() - t0
    result.cpu = proxy.cpu_seconds() - cpu0
    done.set()
    sampler.join()
    return result


def run(deployment: Deployment, *, quick: bool) -> list[Row]:
    # full runs add "none2", a second proxy without the plugin: none2/none is an A/A control
    # through the same harness (the noise floor of the plugin/none ratio and RSS delta)
    # many short rounds: external load drifts over seconds, so short interleaved rounds see
    # the same conditions; the round tail (in-flight logins finishing) is the same for all
    rounds, max_logins, max_seconds = (8, 40, 2.0) if quick else (36, 60, 2.5)
    variants = ("plugin", "none") if quick else ("plugin", "none", "none2")
    pattern = ("plugin", "none", "none", "plugin") if quick else \
        ("plugin", "none", "none2", "none2", "none", "plugin")
    deployment.link_demo_users()
    browsers = [Browser(deployment) for _ in range(CLIENT_THREADS)]
    results: dict[str, list[RoundResult]] = {v: [] for v in variants}
    rss: dict[str, list[tuple[int, int]]] = {}
    with contextlib.ExitStack() as stack:
        proxies = {
            v: stack.enter_context(gunicorn_proxy(
                deployment, v, deployment.layout.ports.proxy if v == "plugin" else _free_port()))
            for v in variants
        }
        progress("throughput: gunicorn up (" + ", ".join(f"{v} pid {p.popen.pid} :{p.port}" for v, p in proxies.items())
                 + f"); {CLIENT_THREADS} client threads")
        for proxy in proxies.values():  # warm-up: every worker thread sees a few logins
            warm = run_round(proxy, browsers, (2 if quick else 4) * CLIENT_THREADS, 30)
            if warm.errors:
                raise RuntimeError(f"warm-up against {proxy.variant} failed: {warm.errors[0]}")
            proxy.rss_samples_kb.clear()
        for r in range(rounds):
            variant = pattern[r % len(pattern)]
            got = run_round(proxies[variant], browsers, max_logins, max_seconds)
            if got.errors:
                raise RuntimeError(f"round {r + 1} ({variant}): {got.errors[0]}")
            results[variant].append(got)
            if (r + 1) % len(pattern) == 0 or r + 1 == rounds:
                so_far = {v: sum(g.completed for g in results[v]) / sum(g.elapsed for g in results[v])
                          for v in results if results[v]}
                progress(f"throughput: round {r + 1}/{rounds}; logins/s so far: "
                         + ", ".join(f"{v} {x:.2f}" for v, x in so_far.items()))
        idle_rss = {variant: proxy.idle_rss_kb for variant, proxy in proxies.items()}
        loaded = {variant: max(statistics.median(v) for v in proxy.rss_samples_kb.values()) / 1024
                  for variant, proxy in proxies.items()}
        for variant, proxy in proxies.items():
            rss[variant] = [(Proxy.status_kb(pid, "VmHWM"), Proxy.status_kb(pid, "VmRSS")) for pid in proxy.workers()]

    arena_rows: list[Row] = []
    if not quick:
        arena_rows = arena_check(deployment, browsers)
    memory = memory_rows(deployment, browsers, quick=quick)

    # what the SP receives, one response per round (not timed)
    sp = browsers[0].sp
    for variant, rounds_of in results.items():
        for got in rounds_of:
            action, fields = form_fields(got.sample)
            released = sp.parse_response(fields["SAMLResponse"]).attributes
            if (ORCID_ATTRIBUTE in released) != (variant == "plugin"):
                raise AssertionError(f"{variant}: unexpected {ORCID_ATTRIBUTE}: {released.get(ORCID_ATTRIBUTE)}")

    rate = {v: statistics.median([g.rate for g in results[v]]) for v in results}
    # Paired per cycle: each cycle of the pattern (P N M M N P, or P N N P) runs every variant
    # symmetrically around its middle, so load that drifts or jumps between cycles cancels;
    # the target figure is the median over cycles of plugin/none (mean rates in the cycle).
    in_order = sorted((g for v in results for g in results[v]), key=lambda g: g.started)
    cycles = [in_order[i:i + len(pattern)] for i in range(0, len(in_order), len(pattern))]

    def cycle_ratio(cycle: list[RoundResult], a: str, b: str) -> float | None:
        ra = [g.rate for g in cycle if g.variant == a]
        rb = [g.rate for g in cycle if g.variant == b]
        return statistics.fmean(ra) / statistics.fmean(rb) if ra and rb else None

    paired = [x for x in (cycle_ratio(c, "plugin", "none") for c in cycles) if x is not None]
    paired_aa = [x for x in (cycle_ratio(c, "none2", "none") for c in cycles) if x is not None]
    latency = {v: Summary.of([x * 1000 for g in results[v] for x in g.latencies]) for v in results}
    total = {v: sum(g.completed for g in results[v]) for v in results}
    peak = {v: max(h for h, _ in rss[v]) / 1024 for v in rss}
    idle = {v: max(idle_rss[v]) / 1024 for v in idle_rss}
    overall = {v: sum(g.completed for g in results[v]) / sum(g.elapsed for g in results[v]) for v in results}
    ratio = statistics.median(paired)
    cpu_per_login = {v: sum(g.cpu for g in results[v]) / max(1, total[v]) * 1000 for v in results}
    letters = {"plugin": "P", "none": "N", "none2": "M"}
    order = sorted((g for v in results for g in results[v]), key=lambda g: g.started)
    per_round = ", ".join(f"{letters[g.variant]}{g.rate:.2f}" for g in order)
    rows = [
        Row("throughput.logins_per_s.plugin", rate["plugin"], "logins/s",
            note=f"median of {len(results['plugin'])} rounds, {total['plugin']} logins; login latency median "
                 f"{latency['plugin'].median:.0f} ms, p95 {latency['plugin'].p95:.0f} ms"),
        Row("throughput.logins_per_s.none", rate["none"], "logins/s",
            note=f"median of {len(results['none'])} rounds, {total['none']} logins; login latency median "
                 f"{latency['none'].median:.0f} ms, p95 {latency['none'].p95:.0f} ms"),
        target_row("throughput.ratio", ratio, "x", ">=", 0.97,
                   f"median over {len(paired)} cycles of the paired plugin/none ratio (per cycle: "
                   + ", ".join(f"{x:.3f}" for x in paired)
                   + f"); ratio of the medians of rounds {rate['plugin'] / rate['none']:.3f}, of all logins over "
                   f"all round time {overall['plugin'] / overall['none']:.3f}. gunicorn {WORKERS} workers x 4 "
                   f"threads each, HTTPS on loopback, {CLIENT_THREADS} concurrent clients in the bench process "
                   f"(sharing the 2 cores), a new browser session per login; rounds in order (P=plugin, N=none, "
                   f"M=none2): {per_round}"),
    ]
    if "none2" in results:
        rows.append(Row("throughput.aa_ratio", statistics.median(paired_aa), "x",
                        note=f"A/A control, paired the same way: a second proxy without the plugin vs the first "
                             f"(per cycle: {', '.join(f'{x:.3f}' for x in paired_aa)}; pooled "
                             f"{overall['none2'] / overall['none']:.3f}): the noise floor of throughput.ratio here"))
    rows.append(Row("throughput.cpu_per_login_ratio", cpu_per_login["plugin"] / cpu_per_login["none"], "x",
                    note=f"gunicorn workers' CPU (with their xmlsec1 children, from /proc) per completed login: "
                         f"{cpu_per_login['plugin']:.1f} vs {cpu_per_login['none']:.1f} ms"
                         + (f" (none2 {cpu_per_login['none2']:.1f} ms)" if "none2" in cpu_per_login else "")
                         + "; capacity is inversely proportional, and CPU is not skewed by other load"))
    rows += [
        Row("throughput.login_p95_ms.plugin", latency["plugin"].p95, "ms"),
        Row("throughput.login_p95_ms.none", latency["none"].p95, "ms"),
        Row("throughput.peak_rss_mb.plugin", peak["plugin"], "MB",
            note="max VmHWM over the workers: " + ", ".join(f"{h / 1024:.1f}" for h, _ in rss["plugin"])),
        Row("throughput.peak_rss_mb.none", peak["none"], "MB",
            note="max VmHWM over the workers: " + ", ".join(f"{h / 1024:.1f}" for h, _ in rss["none"])
                 + ("; none2: " + ", ".join(f"{h / 1024:.1f}" for h, _ in rss["none2"]) if "none2" in rss else "")),
        target_row("throughput.peak_rss_delta_mb", peak["plugin"] - peak["none"], "MB", "<=", 15,
                   "peak RSS (VmHWM) per worker with the plugin minus without; transient peaks of concurrent "
                   "SAML requests make this noisy" + (f" (A/A none2-none: {peak['none2'] - peak['none']:+.1f} MB)"
                                                      if "none2" in peak else "")),
        Row("throughput.loaded_rss_delta_mb", loaded["plugin"] - loaded["none"], "MB",
            note=f"median RSS per worker sampled every 0.25 s during the rounds (largest worker): "
                 f"{loaded['plugin']:.1f} vs {loaded['none']:.1f} MB"
                 + (f" (none2 {loaded['none2']:.1f})" if "none2" in loaded else "")),
        Row("throughput.idle_rss_delta_mb", idle["plugin"] - idle["none"], "MB",
            note=f"RSS per worker right after start, before any login: {idle['plugin']:.1f} vs {idle['none']:.1f} MB "
                 "(the imports and the start-up migration check)"),
        *arena_rows,
        *memory,
    ]
    return rows


def memory_rows(deployment: Deployment, browsers: list[Browser], *, quick: bool) -> list[Row]:
    """RSS per worker after the same logins, with and without the plugin, under sync workers
    (one thread) and threaded (gthread, 4 threads) workers; a second proxy without the plugin is
    the A/A control. Each proxy is fresh; the order alternates between the worker kinds."""
    logins = 24 if quick else 60
    rows: list[Row] = []
    for kind, threads, order in (("sync", 1, ("plugin", "none", "none2")), ("threaded", 4, ("none2", "none", "plugin"))):
        rss: dict[str, float] = {}
        idle: dict[str, float] = {}
        for variant in order:
            with gunicorn_proxy(deployment, variant, _free_port(), threads=threads) as proxy:
                idle[variant] = max(proxy.idle_rss_kb) / 1024
                got = run_round(proxy, browsers, logins, 120.0)
                if got.errors:
                    raise RuntimeError(f"memory round ({kind}, {variant}): {got.errors[0]}")
                time.sleep(0.5)  # the last responses written, the threads idle
                rss[variant] = max(Proxy.status_kb(pid, "VmRSS") for pid in proxy.workers()) / 1024
            progress(f"throughput: memory {kind} {variant}: RSS per worker {rss[variant]:.1f} MB after "
                     f"{logins} logins (idle {idle[variant]:.1f})")
        rows += [
            target_row(f"throughput.rss_delta_mb.{kind}", rss["plugin"] - rss["none"], "MB", "<=", 15,
                       f"{kind} workers ({threads} thread{'s' if threads > 1 else ''} each, {WORKERS} workers): RSS "
                       f"of the larger worker after {logins} fast-path logins, {rss['plugin']:.1f} MB with the plugin "
                       f"vs {rss['none']:.1f} without; at start {idle['plugin']:.1f} vs {idle['none']:.1f} "
                       f"({idle['plugin'] - idle['none']:+.1f}); A/A (a second proxy without the plugin) "
                       f"{rss['none2'] - rss['none']:+.1f} MB"),
            Row(f"throughput.rss_delta_mb.{kind}.aa", rss["none2"] - rss["none"], "MB"),
            Row(f"throughput.rss_delta_mb.{kind}.idle", idle["plugin"] - idle["none"], "MB"),
        ]
    return rows


def arena_check(deployment: Deployment, browsers: list[Browser]) -> list[Row]:
    """The RSS comparison again with MALLOC_ARENA_MAX=2 for both variants (full runs only).

    With glibc's default of up to 8 malloc arenas per core, every gthread worker thread gets
    its own heap; long-lived objects allocated from a request thread (the plugin's pooled
    database connections and SQLAlchemy's caches are created lazily there) keep such heaps from
    shrinking after the SAML work freed its memory. This shows how much of the RSS delta is
    that effect rather than memory the plugin itself holds.
    """
    loaded: dict[str, float] = {}
    peak: dict[str, float] = {}
    env = {"MALLOC_ARENA_MAX": "2"}
    for variant in ("plugin", "none"):
        with gunicorn_proxy(deployment, variant, _free_port(), env) as proxy:
            for rounds in (4 * CLIENT_THREADS, 40):
                proxy.rss_samples_kb.clear()
                got = run_round(proxy, browsers, rounds, 12.0)
                if got.errors:
                    raise RuntimeError(f"MALLOC_ARENA_MAX=2 round ({variant}): {got.errors[0]}")
            loaded[variant] = max(statistics.median(v) for v in proxy.rss_samples_kb.values()) / 1024
            peak[variant] = max(Proxy.status_kb(pid, "VmHWM") for pid in proxy.workers()) / 1024
        progress(f"throughput: MALLOC_ARENA_MAX=2 {variant}: loaded RSS {loaded[variant]:.0f} MB, "
                 f"peak {peak[variant]:.0f} MB")
    return [
        Row("throughput.arena_max_2.loaded_rss_delta_mb", loaded["plugin"] - loaded["none"], "MB",
            note=f"same comparison with MALLOC_ARENA_MAX=2 in both proxies' environment: {loaded['plugin']:.1f} "
                 f"vs {loaded['none']:.1f} MB"),
        Row("throughput.arena_max_2.peak_rss_delta_mb", peak["plugin"] - peak["none"], "MB",
            note=f"VmHWM with MALLOC_ARENA_MAX=2: {peak['plugin']:.1f} vs {peak['none']:.1f} MB"),
    ]
