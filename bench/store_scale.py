"""Row family 3: the link store at 10k, 100k and 1M links, on SQLite and on PostgreSQL.

The store is created by its own migrations (``Store.upgrade()``); links are bulk-loaded with
fast multi-row INSERTs straight into ``orcid_links`` (not through ``link()``, which would take
hours for a million), all active, each with a distinct user key and a distinct checksum-valid
iD. The same database grows 10k -> 100k -> 1M; at each size:

* lookup: ``store.links.get_active(user_key)`` for random loaded users, the query of every
  login (a prepared Core SELECT of the active link and the decision, row -> Link with the iD
  re-validated);
* write: ``Store.link(new_user, new_iD, tokens)``, the call a completed hop makes (per-user
  lock, two indexed reads, link + encrypted token + audit rows, one commit).

Latencies are per call, wall clock, from this process (PostgreSQL over loopback TCP, with the
store's own engine settings, pool pre-ping included). EXPLAIN of the two statements that must
stay indexed (the fast-path lookup by user and the write path's lookup by iD) is checked at
the largest size. PostgreSQL gets ``ANALYZE`` after each bulk load, as autovacuum would do;
SQLite gets none (the plugin never runs it, and its partial indexes need no statistics).
PostgreSQL runs in a private schema that is dropped at the end.
"""
from __future__ import annotations

import contextlib
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from .common import Row, Summary, orcid_for, postgres_unreachable, private_postgres_schema, progress, target_row

NAME = "store"
LOOKUP_P99_MS = 0.5
WRITE_P99_MS = 3
BATCH = 50_000
LABEL = {10_000: "10k", 100_000: "100k", 1_000_000: "1m"}


def user_key(i: int) -> str:
    return f"u{i:07d}@bench.example.org"


def loaded_orcid(i: int) -> str:
    return orcid_for(1_000_000_000 + i)


class Backend:
    name: str
    url: str

    def bulk_load(self, start: int, stop: int) -> None:
        raise NotImplementedError

    def explain(self, sql: str) -> str:
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, directory: Path):
        self.path = directory / "store-scale.sqlite"
        self.url = f"sqlite:///{self.path}"

    @contextlib.contextmanager
    def opened(self) -> Iterator["SqliteBackend"]:
        try:
            yield self
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def bulk_load(self, start: int, stop: int) -> None:
        import sqlite3

        now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=OFF")  # this loading connection only
            for low in range(start, stop, BATCH):
                rows = [(user_key(i), loaded_orcid(i), now, now) for i in range(low, min(stop, low + BATCH))]
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO orcid_links (user_key, issuer, orcid, environment, status, scopes, created_at, "
                    "updated_at) VALUES (?, '', ?, 'production', 'active', 'openid', ?, ?)", rows)
                conn.execute("COMMIT")
            # steady state: the bulk load's pages out of the WAL into the database file
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def explain(self, sql: str) -> str:
        import sqlite3

        conn = sqlite3.connect(self.path)
        try:
            return "; ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        finally:
            conn.close()


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.url = ""
        self.connect_args: dict[str, Any] = {}

    def _connect(self):
        import psycopg

        return psycopg.connect(**self.connect_args, autocommit=True)

    @contextlib.contextmanager
    def opened(self) -> Iterator["PostgresBackend"]:
        with private_postgres_schema(self.base_url, "bench_store") as (url, connect_args):
            self.url, self.connect_args = url, connect_args
            yield self

    def bulk_load(self, start: int, stop: int) -> None:
        with self._connect() as conn:
            for low in range(start, stop, BATCH):
                indexes = range(low, min(stop, low + BATCH))
                conn.execute(
                    "INSERT INTO orcid_links (user_key, issuer, orcid, environment, status, scopes, created_at, "
                    "updated_at) SELECT u, '', o, 'production', 'active', 'openid', now(), now() "
                    "FROM unnest(%s::text[], %s::text[]) AS t(u, o)",
                    ([user_key(i) for i in indexes], [loaded_orcid(i) for i in indexes]))
            # steady state, as autovacuum and the checkpointer would leave it: statistics and the
            # visibility map fresh, the load's WAL checkpointed (not during the measurement)
            conn.execute("VACUUM ANALYZE orcid_links")
            conn.execute("CHECKPOINT")

    def explain(self, sql: str) -> str:
        with self._connect() as conn:
            return "; ".join(row[0].strip() for row in conn.execute(f"EXPLAIN {sql}"))


def statements(store) -> dict[str, str]:
    """The store's own fast-path and write-path SELECTs, with literal values, for EXPLAIN."""
    return store.links.lookup_sql(user_key(4242), loaded_orcid(4242), "production")


def measure(store, loaded: int, lookups: int, writes: int, write_base: int,
            cpu: dict[str, list[float]] | None = None) -> tuple[list[float], list[float]]:
    from satosa_orcid_plugin.orcid_id import OrcidId
    from satosa_orcid_plugin.tokens import TokenSet

    rng = random.Random(loaded)
    for _ in range(200):  # warm-up: pool, statement caches, prepared statements
        store.links.get_active(user_key(rng.randrange(loaded)))
    lookup_s: list[float] = []
    for _ in range(lookups):
        key = user_key(rng.randrange(loaded))
        c0, t0 = time.thread_time(), time.perf_counter()
        link = store.links.get_active(key)
        lookup_s.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.setdefault("lookup", []).append(time.thread_time() - c0)
        if link is None:
            raise AssertionError(f"{key} has no active link")
    tokens = TokenSet(access_token="bench-access-token-" + "x" * 20, refresh_token="bench-refresh-token",
                      expires_at=datetime.now(timezone.utc) + timedelta(days=7300), scope=("openid",))
    write_s: list[float] = []
    for j in range(writes + 20):
        n = write_base + j
        orcid = OrcidId.parse(orcid_for(2_000_000_000 + n))
        c0, t0 = time.thread_time(), time.perf_counter()
        store.links.link(f"w{n:08d}@bench.example.org", orcid, tokens, name="Bench Writer")
        if j >= 20:  # the first ones warm up the write path
            write_s.append(time.perf_counter() - t0)
            if cpu is not None:
                cpu.setdefault("write", []).append(time.thread_time() - c0)
    return lookup_s, write_s


def run_backend(backend: Backend, scales: tuple[int, ...], lookups: int, writes: int,
                skipped: tuple[int, ...]) -> list[Row]:
    from satosa_orcid_plugin.store import Store
    from satosa_orcid_plugin.tokens import TokenCipher

    rows: list[Row] = []
    p99: dict[int, tuple[float, float]] = {}
    with backend.opened():
        store = Store.from_url(backend.url, TokenCipher.from_keys([TokenCipher.generate_key()]))
        try:
            store.db.upgrade()
            loaded = 0
            for scale in scales:
                t0 = time.monotonic()
                backend.bulk_load(loaded, scale)
                load_s = time.monotonic() - t0
                loaded = scale
                cpu: dict[str, list[float]] = {}
                lookup_s, write_s = measure(store, loaded, lookups, writes, write_base=scale * 10, cpu=cpu)
                lk = Summary.of([v * 1000 for v in lookup_s])
                wr = Summary.of([v * 1000 for v in write_s])
                # A/A: the same calls split by parity (interleaved halves of one run): the p99s'
                # distance from each other is this run's noise on the figure
                aa_lk = (Summary.of([v * 1000 for v in lookup_s[0::2]]).p99,
                         Summary.of([v * 1000 for v in lookup_s[1::2]]).p99)
                aa_wr = (Summary.of([v * 1000 for v in write_s[0::2]]).p99,
                         Summary.of([v * 1000 for v in write_s[1::2]]).p99)
                lk_cpu = Summary.of([v * 1000 for v in cpu["lookup"]])
                wr_cpu = Summary.of([v * 1000 for v in cpu["write"]])
                p99[scale] = (lk.p99, wr.p99)
                label = f"store.{backend.name}.{LABEL[scale]}"
                rows += [
                    Row(f"{label}.lookup_ms.median", lk.median, "ms"),
                    target_row(f"{label}.lookup_ms.p99", lk.p99, "ms", "<=", LOOKUP_P99_MS,
                               f"{lk.n} links.get_active() calls back to back on {scale:,} links (bulk load took "
                               f"{load_s:.1f} s): one Core SELECT of the link and the decision; wall clock; A/A "
                               f"(even vs odd calls) p99 {aa_lk[0]:.3f} vs {aa_lk[1]:.3f} ms; this thread's CPU per "
                               f"call median {lk_cpu.median:.3f}, p99 {lk_cpu.p99:.3f} ms"),
                    Row(f"{label}.lookup_cpu_ms.median", lk_cpu.median, "ms"),
                    Row(f"{label}.write_ms.median", wr.median, "ms"),
                    target_row(f"{label}.write_ms.p99", wr.p99, "ms", "<=", WRITE_P99_MS,
                               f"{wr.n} link() calls of new users (link + token + audit rows, one commit); A/A "
                               f"p99 {aa_wr[0]:.2f} vs {aa_wr[1]:.2f} ms; CPU per call median {wr_cpu.median:.2f}, "
                               f"p99 {wr_cpu.p99:.2f} ms"),
                    Row(f"{label}.write_cpu_ms.median", wr_cpu.median, "ms"),
                ]
                progress(f"store: {backend.name} at {scale:,} links: lookup p99 {lk.p99:.3f} ms, "
                         f"write p99 {wr.p99:.2f} ms (load {load_s:.1f} s)")
            plans = {index: backend.explain(sql) for index, sql in statements(store).items()}
            used = all(index in plan for index, plan in plans.items())
            rows.append(Row(f"store.{backend.name}.explain_uses_index", ", ".join(plans), "index",
                            "index scan on both", used,
                            f"at {loaded:,} links: " + " | ".join(f"{plan}" for plan in plans.values())))
        finally:
            store.db.dispose()
    first, last = scales[0], scales[-1]
    rows.append(Row(f"store.{backend.name}.lookup_p99_growth", p99[last][0] / p99[first][0], "x",
                    note=f"lookup p99 at {LABEL[last]} / at {LABEL[first]} (flat = about 1)"))
    rows.append(Row(f"store.{backend.name}.write_p99_growth", p99[last][1] / p99[first][1], "x",
                    note=f"write p99 at {LABEL[last]} / at {LABEL[first]}"))
    for scale in skipped:
        label = f"store.{backend.name}.{LABEL[scale]}"
        rows += [Row(f"{label}.lookup_ms.p99", None, "ms", f"<= {LOOKUP_P99_MS:g}", None, "skipped in --quick"),
                 Row(f"{label}.write_ms.p99", None, "ms", f"<= {WRITE_P99_MS:g}", None, "skipped in --quick")]
    return rows


def fsync_floor(directory: Path, n: int = 200) -> Row:
    """The storage's own durable-write latency: 4 KiB write + fdatasync, as a commit needs."""
    import os

    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    samples = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            samples.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    s = Summary.of(samples)
    return Row("store.fdatasync_ms.p99", s.p99, "ms",
               note=f"the disk's floor for a durable commit ({n} x 4 KiB write + fdatasync in {directory}, the "
                    f"same file system as the SQLite file and, here, PostgreSQL's data directory): median "
                    f"{s.median:.2f} ms, p99 {s.p99:.2f} ms. Every link() commits once (SQLite WAL with "
                    "synchronous=FULL, PostgreSQL synchronous_commit=on), so write p99 cannot be below this")


def run(tmp_path: Path, postgres_url: str, *, quick: bool) -> list[Row]:
    scales = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    skipped = (1_000_000,) if quick else ()
    lookups, writes = (500, 100) if quick else (2000, 300)
    rows = [fsync_floor(tmp_path)]
    rows += run_backend(SqliteBackend(tmp_path), scales, lookups, writes, skipped)
    why = postgres_unreachable(postgres_url)
    if why:
        progress(f"store: {why}; PostgreSQL rows not measured")
        return rows + [Row(f"store.postgresql.{LABEL[n]}.{what}_ms.p99", None, "ms", bound, None, why)
                       for n in (10_000, 100_000, 1_000_000)
                       for what, bound in (("lookup", f"<= {LOOKUP_P99_MS:g}"), ("write", f"<= {WRITE_P99_MS:g}"))]
    try:
        pg = PostgresBackend(postgres_url)
        rows += run_backend(pg, scales, lookups, writes, skipped)
    except Exception as exc:  # e.g. no PostgreSQL reachable: say so, keep the SQLite rows
        import traceback

        traceback.print_exc()
        rows.append(Row("store.postgresql.error", None, "", None, False,
                        f"PostgreSQL part failed: {type(exc).__name__}: {str(exc)[:200]}"))
    return rows
