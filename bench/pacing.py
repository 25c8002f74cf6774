"""Row family 5: affiliation worker pacing against ORCID's member API rate limit.

The ORCID emulator (in a thread of this process) enforces ORCID's limit: a token bucket of 24
requests/s with bursts of 40, answering 503 beyond it. N researchers are linked on a private
PostgreSQL schema with real tokens from the emulator's token endpoint and the
``/activities/update`` scope, each queuing one employment item (``store.outbox.link_extra``, what
the proxy does on a hop). Then two worker *processes* run ``python -m satosa_orcid_plugin.cli sync run
--once`` with the default sync settings (22 req/s, burst 36, shared through the database
bucket) until the queue is empty.

Sustained rate: member API requests per second after the first 2 s (the burst), from the
emulator's own request log. 503s: requests the emulator refused for the rate limit, plus any
5xx answer. Also checked: every item ends on its record exactly once.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .common import Row, orcid_for, postgres_unreachable, private_postgres_schema, progress, target_row

NAME = "pacing"
ROOT = Path(__file__).resolve().parents[1]
CLIENT_ID, SECRET = "APP-BENCHPACING0001", "bench-pacing-secret"
REDIRECT = "https://proxy.example.org/orcid/callback"
SCOPES = "/read-limited /activities/update"
ORG = {"name": "Boston University", "city": "Boston", "region": "Massachusetts", "country": "US",
       "disambiguated_id": "https://ror.org/05qwgg493"}
BURST_WINDOW_S = 2.0


def sync_available() -> str | None:
    """None when the affiliation worker can be used, else why not."""
    import importlib

    try:
        for module in ("satosa_orcid_plugin.services.sync", "satosa_orcid_plugin.store.outbox", "satosa_orcid_plugin.affiliations"):
            importlib.import_module(module)
    except Exception as exc:  # missing, or broken while someone works on it
        return f"satosa_orcid_plugin.services.sync is not usable: {type(exc).__name__}: {exc}"
    return None


def skipped(note: str) -> list[Row]:
    return [Row("pacing.sustained_req_per_s", None, "req/s", ">= 22", None, note),
            Row("pacing.status_503", None, "responses", "== 0", None, note)]


def run(tmp_path: Path, postgres_url: str, *, quick: bool) -> list[Row]:
    why = sync_available()
    if why:
        return skipped(why)
    import yaml

    from satosa_orcid_plugin.config import parse_affiliations
    from satosa_orcid_plugin.config import OrcidSettings, Timeouts
    from satosa_orcid_plugin.devstack.emulator import ClientRegistration, DemoAccount, Emulator, serve_in_thread
    from satosa_orcid_plugin.orcid_client import OrcidClient
    from satosa_orcid_plugin.store import DONE, Store
    from satosa_orcid_plugin.orcid_client import http_session
    from satosa_orcid_plugin.tokens import TokenCipher, TokenSet

    items = 150 if quick else 450
    accounts = [DemoAccount(orcid_for(3_900_000_000 + i), f"pace{i}@example.edu", "pw", "Pace", f"Tester {i}", None)
                for i in range(items)]
    why_not_pg = postgres_unreachable(postgres_url)
    if why_not_pg:
        progress(f"pacing: {why_not_pg}; the workers share a SQLite file instead")
    emulator = Emulator("http://placeholder", [ClientRegistration(CLIENT_ID, SECRET, [REDIRECT], name="Bench U")],
                        accounts=accounts)
    server = serve_in_thread(emulator)
    emulator.issuer = server.url
    try:
        database = (contextlib.nullcontext((f"sqlite:///{tmp_path / 'pacing.sqlite'}", None)) if why_not_pg
                    else private_postgres_schema(postgres_url, "bench_pacing"))
        with database as (url, _connect):
            key = TokenCipher.generate_key()
            store = Store.from_url(url, TokenCipher.from_keys([key]))
            try:
                store.db.upgrade()
                settings = parse_affiliations({"organization": dict(ORG), "department_attribute": "ou",
                                               "role_attribute": "title"})
                client = OrcidClient(OrcidSettings(environment="emulator", base_url=server.url,
                                                   api_base_url=server.url, client_id=CLIENT_ID,
                                                   client_secret=SECRET, scopes=tuple(SCOPES.split()),
                                                   timeouts=Timeouts(2.0, 10.0)), session=http_session(transport_retries=False))
                outbox = store.outbox
                for i, account in enumerate(accounts):
                    code = emulator.issue_code_for(CLIENT_ID, account.orcid, SCOPES, REDIRECT)
                    grant = client.exchange_code(code, REDIRECT)
                    tokens = TokenSet.from_token_response(grant.token_response(), datetime.now(timezone.utc))
                    store.links.link(f"pace{i}@example.org", grant.orcid, tokens,
                                     extra=outbox.link_extra(settings, {"edupersonaffiliation": ["staff"],
                                                                        "ou": [f"Dept {i % 7}"], "title": ["Researcher"]}))
                queued = len(outbox.items(limit=items + 10))
                progress(f"pacing: {items} researchers linked, {queued} items queued; starting 2 worker processes")
                emulator.member_api.reset()  # a full bucket at ORCID, as for a fresh client
                emulator.requests.clear()
                config = tmp_path / "pacing-orcid.yaml"
                config.write_text(yaml.safe_dump({
                    "module": "satosa_orcid_plugin.OrcidConnect", "name": "orcid",
                    "config": {
                        "orcid": {"environment": "emulator", "base_url": server.url, "client_id": CLIENT_ID,
                                  "client_secret": SECRET, "scopes": SCOPES.split(),
                                  "timeouts": {"connect": 2, "read": 10}},
                        "user_key_attribute": "edupersonprincipalname",
                        "store": {"database_url": url, "token_keys": [key], "auto_upgrade": False},
                        "affiliations": {"organization": ORG, "department_attribute": "ou",
                                         "role_attribute": "title"},
                    },
                }))
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                budget = 60 if quick else 120
                t0 = time.monotonic()
                workers = [subprocess.Popen(
                    [sys.executable, "-m", "satosa_orcid_plugin.cli", "--config", str(config), "sync", "run", "--once",
                     "--batch-size", "4", "--owner", f"bench-w{n}"],
                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for n in range(2)]
                outputs = []
                for w in workers:
                    try:
                        outputs.append(w.communicate(timeout=max(1.0, budget - (time.monotonic() - t0))))
                    except subprocess.TimeoutExpired:
                        w.kill()  # a worker we started, by its own handle
                        outputs.append(w.communicate())
                codes = [w.returncode for w in workers]
                api = [r for r in emulator.requests if r.endpoint == "api"]
                statuses = [r.status for r in api]
                done = sum(1 for i in outbox.items(limit=items + 10) if i.status == DONE)
                on_record = sum(1 for a in accounts if len(emulator.member_api.items_of(a.orcid)) == 1)
                rate_limited = emulator.member_api.rate_limited
            finally:
                store.db.dispose()
    finally:
        server.stop()

    if codes != [0, 0]:
        err = " | ".join(e.strip().splitlines()[-1] if e.strip() else "" for _, e in outputs)
        return skipped(f"worker processes exited {codes}: {err[:300]}")
    reports = []
    for out, _ in outputs:
        try:
            reports.append(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            reports.append({})
    times = sorted(r.time for r in api)
    first, last = times[0], times[-1]
    steady = [t for t in times if t >= first + BURST_WINDOW_S]
    sustained = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else float("nan")
    overall = (len(times) - 1) / (last - first) if last > first else float("nan")
    errors_5xx = sum(1 for s in statuses if s is not None and s >= 500)
    note = (f"{len(api)} member API requests for {items} items in {last - first:.1f} s by 2 worker processes "
            f"(posted {[r.get('posted') for r in reports]}); overall {overall:.2f} req/s incl. the initial burst; "
            f"default sync settings (rate_per_second 22, burst 36); database: "
            f"{'SQLite (' + why_not_pg + ')' if why_not_pg else 'PostgreSQL'}")
    return [
        target_row("pacing.sustained_req_per_s", sustained, "req/s", ">=", 22, note),
        Row("pacing.overall_req_per_s", overall, "req/s"),
        target_row("pacing.status_503", rate_limited + errors_5xx, "responses", "==", 0,
                   f"rate-limited 503s {rate_limited}, other 5xx {errors_5xx}"),
        target_row("pacing.items_written_once", on_record, "items", "==", items,
                   f"{done} outbox rows done; items on the emulator's records exactly once"),
    ]
