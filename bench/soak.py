"""Soak row family: a bounded run of complete logins through two proxy instances.

Two gunicorn instances (the image's settings, 2 workers each, worker recycling off so that
growth shows) share one PostgreSQL (a private schema) behind the loopback round-robin
balancer of ``tests/e2e/balancer.py`` (no stickiness: every new connection goes to the next
instance). Browsers (``ScriptedBrowser`` + ``PageWalker``: every page as a person acts on it,
a new connection per request) log in concurrently at the demo SP:

* alice is linked: the fast path;
* bob is not linked: the hop, with ORCID's consent; unlinked again afterwards through the admin
  service (which revokes the tokens), so his next login hops again;
* carol is not linked and answers "not now" once, then is not asked.

ORCID is the emulator, in this process, so its faults and its token table are at hand. About
30% of bob's hops meet an injected fault at ORCID's token endpoint (HTTP 503, a dropped
connection, an id_token with a bad signature or audience: the last two after ORCID issued a
token), and some revokes fail (HTTP 503).

Rows: logins completed (the SP got its answer), failed cleanly (the plugin's page or an error
status for the SP, never a 5xx), 5xx answers (target 0), orphan tokens (live at ORCID, held by
no link, after the stored revocations were drained; target 0), and worker RSS growth per 1,000
logins (sum over the four workers after a warm-up; target about 0).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import Row, postgres_unreachable, private_postgres_schema, progress, target_row

INSTANCES = 2
WORKERS = 2
FAULT_RATE = 0.3
TOKEN_FAULTS = ({"kind": "status", "status": 503}, {"kind": "drop"}, {"kind": "bad_signature"}, {"kind": "wrong_aud"})
BOB_ORCID = "0000-0001-5109-3700"  # emulator demo accounts
WARMUP = 0.4  # share of the logins before the RSS samples the growth is fitted to
SAMPLES = 12  # RSS samples over the run
RSS_BOUND_MB = 5.0  # per 1,000 logins: "about 0" (one worker's arenas settle in steps of ~1 MB)


def skipped(note: str) -> list[Row]:
    return [Row("soak.logins_completed", None, "logins", None, None, note)]


def worker_pids(master: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.completed = self.with_id = self.failed_cleanly = self.server_errors = self.broken = self.relinked = 0
        self.notes: list[str] = []

    def add(self, field: str, note: str | None = None) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)
            if note and len(self.notes) < 5:
                self.notes.append(note)


def run(tmp_path: Path, postgres_url: str, *, quick: bool) -> list[Row]:
    reason = postgres_unreachable(postgres_url)
    if reason:
        return skipped(reason)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
    from balancer import Balancer

    from satosa_orcid_plugin.devstack.demo import DEMO_ORCID_ID, ChildProcess, DemoStack
    from satosa_orcid_plugin.devstack.emulator import ClientRegistration, Emulator, serve_in_thread
    from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

    rounds = int(os.environ.get("SATOSA_ORCID_SOAK_ROUNDS") or (15 if quick else 200))  # logins per user
    with private_postgres_schema(postgres_url, "soak") as (url, _):
        layout = DemoLayout(tmp_path / "soak" / "deployment", DemoPorts.free())
        stack = DemoStack(layout, log=lambda m: None)
        env = stack.env()
        env.update({"SATOSA_ORCID_DATABASE_URL": url, "GUNICORN_MAX_REQUESTS": "0"})
        upgrade = subprocess.run([os.path.join(os.path.dirname(sys.executable), "satosa-orcid"), "db", "upgrade"],
                                 env=env, capture_output=True, text=True, timeout=120)
        if upgrade.returncode != 0:
            return skipped(f"db upgrade failed: {upgrade.stderr.strip()[-200:]}")
        ports = [DemoPorts.free().proxy for _ in range(INSTANCES)]
        proxies = [ChildProcess(
            f"proxy-{i}", port,
            [sys.executable, "-m", "gunicorn", "-c", "python:satosa_orcid_plugin.ops.gunicorn_conf",
             "--bind", f"{layout.host}:{port}", "--workers", str(WORKERS), "--certfile", str(layout.tls_cert),
             "--keyfile", str(layout.tls_key), "satosa_orcid_plugin.ops.wsgi:app"],
            f"https://{layout.host}:{port}/Saml2IDP/proxy.xml", layout.logs_dir / f"proxy-{i}.log",
            cwd=layout.proxy_conf_dir) for i, port in enumerate(ports)]
        stack.children = [c for c in stack.children if c.name not in ("proxy", "emulator")] + proxies
        stack.env = lambda: env
        emulator = Emulator(layout.emulator_url,
                            clients=[ClientRegistration(**c) for c in layout.emulator_clients()])
        server = balancer = None
        try:
            stack.start()  # checks the layout's ports are free first: the emulator binds after
            server = serve_in_thread(emulator, layout.host, port=layout.ports.emulator)
            balancer = Balancer(layout.ports.proxy, ports)
            balancer.round_robin()
            return _soak(layout, env, emulator, proxies, rounds, DEMO_ORCID_ID, quick)
        finally:
            stack.stop()
            if balancer is not None:
                balancer.stop()
            if server is not None:
                server.stop()


def _soak(layout, env, emulator, proxies, rounds: int, josiah: str, quick: bool) -> list[Row]:
    from satosa_orcid_plugin.devstack.demo import PageWalker, _at_sp_result
    from satosa_orcid_plugin.devstack.demo_sp import extract_released
    from satosa_orcid_plugin.devstack.scripted_browser import ScriptedBrowser
    from satosa_orcid_plugin.orcid_client import OrcidClient
    from satosa_orcid_plugin.services.revocation import TokenRevoker
    from satosa_orcid_plugin.store import Store
    from satosa_orcid_plugin.tokens import TokenCipher
    from satosa_orcid_plugin.config import parse_config
    from satosa_orcid_plugin.devstack.layout import load_proxy_config

    plugin = next(m for m in load_proxy_config(layout.proxy_conf_dir, env)["MICRO_SERVICES"] if m["name"] == "orcid")
    config = parse_config(plugin["config"])
    store = Store.from_url(env["SATOSA_ORCID_DATABASE_URL"], TokenCipher.from_keys(config.store.token_keys))
    client = OrcidClient(config.orcid)
    revoker = TokenRevoker(client, store)
    idp = layout.idp_entity_id  # links belong to (user key, the IdP that asserted it)
    tally = Tally()
    rng = random.Random(1468)
    done = [0]
    rss: dict[str, float] = {}
    samples: list[tuple[int, float]] = []  # (logins done, MB)
    total = 3 * rounds
    masters = [p.popen.pid for p in proxies]

    def sample_rss(label: str) -> None:
        rss[label] = rss_mb([pid for m in masters for pid in worker_pids(m)])

    def login(user: str, choice: str, orcid_id: str) -> None:
        browser = ScriptedBrowser(verify=str(layout.tls_cert), timeout=60)
        browser.session.headers["Connection"] = "close"  # a new connection (and instance) per request
        statuses: list[int] = []
        browser.session.hooks["response"].append(lambda r, *a, **k: statuses.append(r.status_code))
        walker = PageWalker(layout, browser, user=user, interstitial_choice=choice, orcid_id=orcid_id,
                            log=lambda m: None)
        try:
            r = browser.follow_link(browser.get(f"{layout.sp_base}/"), "Log in through the proxy")
            r = walker.walk(r, _at_sp_result(layout))
        except Exception as exc:  # noqa: BLE001 - counted
            tally.add("broken", f"{user}: {type(exc).__name__}: {str(exc)[:120]}")
            return
        finally:
            if any(s >= 500 for s in statuses):
                tally.add("server_errors", f"{user}: 5xx in {statuses}")
        if _at_sp_result(layout)(r):
            tally.add("completed")
            if extract_released(r.text)["attributes"].get("eduPersonOrcid"):
                tally.add("with_id")
        elif r.status_code < 500:
            tally.add("failed_cleanly")

    def user_loop(user: str) -> None:
        for _ in range(rounds):
            if user == "alice":
                login("alice", "connect", josiah)
            elif user == "carol":
                login("carol", "not_now", josiah)
            else:
                if rng.random() < FAULT_RATE:
                    emulator.faults.add(endpoint="token", times=1, **rng.choice(TOKEN_FAULTS))
                if rng.random() < 0.1:
                    emulator.faults.add(endpoint="revoke", kind="status", status=503, times=1)
                login("bob", "connect", BOB_ORCID)
                try:
                    if store.links.get_active("bob@demo.example.org", issuer=idp) is not None:
                        link, tokens = store.links.unlink("bob@demo.example.org", reason="soak", issuer=idp)
                        tally.add("relinked")
                        if tokens is not None:
                            for token in filter(None, (tokens.access_token, tokens.refresh_token)):
                                revoker.give_up(token, orcid=link.orcid, reason="unlinked")
                except Exception as exc:  # noqa: BLE001 - counted
                    tally.add("broken", f"unlink: {type(exc).__name__}: {exc}")
            with tally.lock:
                done[0] += 1
                if done[0] == max(3, int(total * WARMUP)):
                    sample_rss("warm")
                if done[0] >= total * WARMUP and done[0] % max(1, total // SAMPLES) == 0:
                    samples.append((done[0], rss_mb([pid for m in masters for pid in worker_pids(m)])))
                if done[0] % max(1, total // 10) == 0:
                    progress(f"soak: {done[0]}/{total} logins")

    progress(f"soak: {total} logins, {INSTANCES} instances x {WORKERS} workers, shared PostgreSQL")
    login("alice", "connect", josiah)  # alice is linked from here on (not counted)
    tally.completed = tally.with_id = tally.failed_cleanly = 0
    started, wall_started = time.monotonic(), emulator.clock()
    with ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(user_loop, u) for u in ("alice", "bob", "carol")]:
            future.result()
    elapsed = time.monotonic() - started
    sample_rss("end")
    emulator.faults.clear()

    # every token ORCID issued is in a link or revoked, once the stored revocations are drained
    queued = store.revocations.waiting()
    for _ in range(5):
        import sqlalchemy as sa

        from satosa_orcid_plugin.store.schema import RevocationRow
        ids = tuple(store.db.scalars(sa.select(RevocationRow.id)))
        if not ids:
            break
        revoker.drain(len(ids), ids=ids)
    held = set()
    for user in ("alice", "bob", "carol"):
        tokens = store.links.tokens(f"{user}@demo.example.org", issuer=idp)
        if tokens is not None:
            held.add(tokens.access_token)
    live = [t for t in emulator.tokens() if t.orcid and t.access_token not in held]
    store.db.dispose()
    orphans = "; ".join(f"iD {t.orcid} issued at +{t.issued_at - wall_started:.1f} s (code ...{(t.code or '')[-4:]})"
                        for t in live[:5])
    if live and os.environ.get("SATOSA_ORCID_SOAK_KEEP"):  # the proxies' logs, to see why
        progress(f"soak: orphan tokens: {orphans}; logs in {layout.logs_dir}")

    counted = total
    samples.append((total, rss["end"]))
    growth = _slope(samples) * 1000 if len(samples) >= 3 else None  # MB per 1,000 logins, least squares
    note = "; ".join(tally.notes) or None
    return [
        Row("soak.logins", counted, "logins", None, None,
            f"{elapsed:.0f} s, {counted / elapsed:.1f} logins/s; alice linked, bob hops (30% ORCID faults), "
            "carol declines once"),
        Row("soak.logins_completed", tally.completed, "logins", None, None,
            f"{tally.with_id} with the iD; bob linked through a hop and was unlinked again {tally.relinked} times"),
        Row("soak.logins_failed_cleanly", tally.failed_cleanly, "logins", None, None, note),
        target_row("soak.logins_broken", tally.broken, "logins", "==", 0, note),
        target_row("soak.http_5xx", tally.server_errors, "logins with a 5xx", "==", 0),
        Row("soak.revocations_queued_at_end", queued, "tokens", None, None, "drained before counting orphans"),
        target_row("soak.orphan_tokens", len(live), "tokens", "==", 0,
                   "live at the emulator, held by no link" + (f": {orphans}" if live else "")),
        Row("soak.worker_rss_end", round(rss.get("end", float("nan")), 1), "MB",
            None, None, f"sum over {INSTANCES * WORKERS} workers; {rss.get('warm', float('nan')):.1f} MB after warm-up"),
        (Row("soak.worker_rss_growth_per_1000_logins", None if growth is None else round(growth, 1), "MB", None,
             None, "quick run: too short to tell growth from warm-up; see the full run")
         if quick else
         target_row("soak.worker_rss_growth_per_1000_logins", None if growth is None else round(growth, 1), "MB",
                    "<=", RSS_BOUND_MB, f"least-squares slope over the last {1 - WARMUP:.0%} of the logins, sum "
                    "over the workers, recycling (max_requests) off")),
    ]


def _slope(points: list[tuple[int, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0
