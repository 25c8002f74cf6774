"""The link store, run the same way on SQLite and PostgreSQL (see tests/conftest.py)."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from satosa_orcid_plugin.errors import ConfigError, LinkConflict, NotFound, StoreError
from satosa_orcid_plugin.orcid_id import OrcidId, check_digit
from satosa_orcid_plugin.store import VERSION_TABLE, Store
from satosa_orcid_plugin.store.schema import Base
from satosa_orcid_plugin.tokens import TokenCipher, TokenSet

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
ALICE, BOB = "alice@uni.example", "bob@uni.example"


def orcid(n: int) -> OrcidId:
    """The n-th checksum-valid test iD."""
    base = f"0000000{n:08d}"
    return OrcidId.parse(base + check_digit(base))


def tokens(tag: str = "1", *, expires_in: int = 631138518) -> TokenSet:
    return TokenSet.from_token_response(
        {
            "access_token": f"access-{tag}-6f1c2b",
            "refresh_token": f"refresh-{tag}-9d8e7a",
            "expires_in": expires_in,
            "scope": "/authenticate /read-limited",
        },
        NOW,
    )


@pytest.fixture
def make_store(database_url):
    """Stores over the same database (e.g. with other keys); all migrated and disposed."""
    made: list[Store] = []

    def make(cipher: TokenCipher, **kwargs) -> Store:
        store = Store.from_url(database_url, cipher, **kwargs)
        store.db.upgrade()
        made.append(store)
        return store

    yield make
    for store in made:
        store.db.dispose()


@pytest.fixture
def store(make_store, token_cipher) -> Store:
    return make_store(token_cipher)


def events(store: Store, user_key: str | None = None) -> list[str]:
    """Audit event names, oldest first."""
    return [e["event"] for e in reversed(store.db.audit_events(user_key))]


# --- linking ---------------------------------------------------------------------------
def test_link_then_fast_path_finds_it(store):
    link = store.links.link(ALICE, orcid(1), tokens(), name="Alice A.", amr="mfa", session_id="s-1")

    active = store.links.get_active(ALICE)
    assert active == link
    assert active.orcid == orcid(1) and active.orcid.uri == f"https://orcid.org/{orcid(1)}"
    assert active.status == "active" and active.environment == "production"
    assert active.scopes == ("/authenticate", "/read-limited")
    assert (active.name, active.amr) == ("Alice A.", "mfa")
    assert active.created_at.tzinfo is not None and active.created_at.utcoffset() == timedelta(0)
    assert store.links.get(ALICE) == link
    assert store.links.find_by_orcid(orcid(1)) == link
    assert store.links.tokens(ALICE) == tokens()
    assert store.links.get_active(BOB) is None and store.links.get(BOB) is None and store.links.tokens(BOB) is None
    assert store.links.find_by_orcid(orcid(2)) is None

    [audit] = store.db.audit_events(ALICE)
    assert audit["event"] == "link" and audit["orcid"] == str(orcid(1)) and audit["session_id"] == "s-1"
    assert re.fullmatch(r".+:\d+", audit["instance"])


def test_sandbox_ids_live_in_their_own_environment(store):
    sandbox_id = OrcidId.parse(f"https://sandbox.orcid.org/{orcid(1)}")
    store.links.link(ALICE, sandbox_id, tokens())
    store.links.link(BOB, orcid(1), tokens())  # same digits on production: no conflict

    assert store.links.get_active(ALICE).environment == "sandbox"
    assert store.links.get_active(ALICE).orcid.uri.startswith("https://sandbox.orcid.org/")
    assert store.links.find_by_orcid(sandbox_id).user_key == ALICE
    assert store.links.find_by_orcid(orcid(1)).user_key == BOB


def test_linking_the_same_id_again_refreshes_tokens_only(store):
    first = store.links.link(ALICE, orcid(1), tokens("old"))
    again = store.links.link(ALICE, orcid(1), tokens("new"), name="Alice")

    assert again.created_at == first.created_at
    assert again.name == "Alice"
    assert store.links.tokens(ALICE) == tokens("new")
    assert len(store.links.recent()) == 1
    assert events(store, ALICE) == ["link", "relink"]

    store.links.link(ALICE, orcid(1), None)  # no new tokens: keep the stored ones
    assert store.links.tokens(ALICE) == tokens("new")


def test_linking_another_id_replaces_the_old_link(store):
    store.links.link(ALICE, orcid(1), tokens("one"))
    store.links.link(ALICE, orcid(2), tokens("two"))

    assert store.links.get_active(ALICE).orcid == orcid(2)
    assert store.links.tokens(ALICE) == tokens("two")
    assert [link.orcid for link in store.links.recent(status="unlinked")] == [orcid(1)]
    assert store.links.find_by_orcid(orcid(1)) is None
    assert events(store, ALICE) == ["link", "switch"]
    assert store.db.audit_events(ALICE)[0]["detail"]["previous"] == str(orcid(1))


def test_an_id_held_by_another_user_is_refused_and_audited(store):
    store.links.link(ALICE, orcid(1), tokens("alice"))

    with pytest.raises(LinkConflict):
        store.links.link(BOB, orcid(1), tokens("bob"), session_id="s-bob")

    assert store.links.get_active(ALICE).orcid == orcid(1)
    assert store.links.tokens(ALICE) == tokens("alice")
    assert store.links.get(BOB) is None and store.links.tokens(BOB) is None
    [conflict] = store.db.audit_events(BOB)
    assert conflict["event"] == "conflict" and conflict["orcid"] == str(orcid(1))
    assert conflict["session_id"] == "s-bob" and conflict["detail"]["held_by"] == ALICE


def test_move_takes_the_id_from_the_other_user(store):
    store.links.link(ALICE, orcid(1), tokens("alice"))

    moved = store.links.link(BOB, orcid(1), tokens("bob"), on_conflict="move")

    assert moved.user_key == BOB and store.links.get_active(BOB).orcid == orcid(1)
    assert store.links.get_active(ALICE) is None and store.links.get(ALICE) is None
    assert store.links.tokens(ALICE) is None and store.links.tokens(BOB) == tokens("bob")
    assert store.links.find_by_orcid(orcid(1)).user_key == BOB
    assert events(store, ALICE) == ["link", "moved"]
    assert events(store, BOB) == ["link"]


def test_unlink_returns_the_tokens_to_revoke_at_orcid(store):
    store.links.link(ALICE, orcid(1), tokens())

    link, returned = store.links.unlink(ALICE, reason="user request", session_id="s-2")

    assert link.status == "unlinked" and link.orcid == orcid(1)
    assert returned == tokens()
    assert store.links.get_active(ALICE) is None and store.links.get(ALICE) is None
    assert store.links.tokens(ALICE) is None
    latest = store.db.audit_events(ALICE)[0]
    assert latest["event"] == "unlink" and latest["detail"]["reason"] == "user request"
    with pytest.raises(NotFound):
        store.links.unlink(ALICE)
    with pytest.raises(NotFound):
        store.links.unlink(BOB)
    # The iD is free again.
    assert store.links.link(BOB, orcid(1), tokens()).status == "active"


def test_revoked_link_stays_visible_but_is_not_released(store):
    store.links.link(ALICE, orcid(1), tokens())

    revoked = store.links.revoke(ALICE, "401 invalid_token")

    assert revoked.status == "revoked" and revoked.revoke_reason == "401 invalid_token"
    assert revoked.revoked_at is not None
    assert store.links.get_active(ALICE) is None
    assert store.links.get(ALICE).status == "revoked"
    assert store.links.tokens(ALICE) is None
    assert store.links.revoke(ALICE, "again") is None
    assert events(store, ALICE) == ["link", "revoke"]

    relinked = store.links.link(ALICE, orcid(1), tokens("fresh"))
    assert relinked.status == "active" and store.links.tokens(ALICE) == tokens("fresh")
    assert store.links.get(ALICE) == relinked


def test_a_revoked_link_can_be_unlinked(store):
    store.links.link(ALICE, orcid(1), tokens())
    store.links.revoke(ALICE, "401")

    link, returned = store.links.unlink(ALICE)

    assert link.status == "unlinked" and returned is None
    assert store.links.get(ALICE) is None


def test_bad_arguments_are_rejected_before_touching_the_database(store):
    with pytest.raises(ValueError):
        store.links.link(ALICE, orcid(1), tokens(), on_conflict="steal")
    with pytest.raises(ValueError):
        store.links.link(ALICE, orcid(1), tokens(), environment="staging")
    with pytest.raises(ValueError):
        store.decisions.record(ALICE, "maybe", None)
    with pytest.raises(ValueError):
        store.decisions.record(ALICE, "not_now", None)
    with pytest.raises(ValueError):
        store.decisions.get(ALICE, datetime(2025, 1, 1))  # naive
    assert store.links.recent() == []


# --- decisions -------------------------------------------------------------------------
def test_not_now_lasts_until_its_time_and_never_lasts(store):
    store.decisions.record(ALICE, "not_now", NOW + timedelta(days=7), session_id="s-3")
    store.decisions.record(BOB, "never", None)

    assert store.decisions.get(ALICE, NOW) == "not_now"
    assert store.decisions.get(ALICE, NOW + timedelta(days=7)) is None
    assert store.decisions.get(BOB, NOW + timedelta(days=3650)) == "never"
    assert store.decisions.get("carol", NOW) is None
    stats = store.links.stats(NOW)
    assert (stats["declined_not_now"], stats["declined_never"]) == (1, 1)
    assert store.links.stats(NOW + timedelta(days=8))["declined_not_now"] == 0
    assert store.db.audit_events(ALICE)[0]["event"] == "decline"

    store.decisions.record(ALICE, "never", None)  # a later answer replaces the earlier one
    assert store.decisions.get(ALICE, NOW) == "never"
    store.decisions.clear(ALICE)
    assert store.decisions.get(ALICE, NOW) is None


def test_linking_clears_a_decision(store):
    store.decisions.record(ALICE, "never", None)
    store.links.link(ALICE, orcid(1), tokens())
    assert store.decisions.get(ALICE, NOW) is None


def test_stats_count_links_by_state(store):
    store.links.link(ALICE, orcid(1), tokens())
    store.links.link(BOB, orcid(2), tokens())
    store.links.link("carol", orcid(3), tokens())
    store.links.revoke(BOB, "401")
    store.links.unlink("carol")

    stats = store.links.stats(datetime.now(timezone.utc))

    assert stats == {
        "linked": 1, "revoked": 1, "unlinked": 1,
        "declined_not_now": 0, "declined_never": 0, "links_last_day": 3,
    }
    assert store.links.stats(datetime.now(timezone.utc) + timedelta(days=2))["links_last_day"] == 0
    assert [link.user_key for link in store.links.recent(limit=2)] == ["carol", BOB]
    assert [link.user_key for link in store.links.recent(limit=2, offset=2)] == [ALICE]


# --- audit -----------------------------------------------------------------------------
def test_audit_never_keeps_secrets(store):
    store.db.append_audit("login_hop", user_key=ALICE, orcid=orcid(1), session_id="s-4",
                requester="https://sp.example", code="the-auth-code", access_token="tok")

    [event] = store.db.audit_events(ALICE)
    assert event["event"] == "login_hop" and event["session_id"] == "s-4"
    assert event["detail"]["requester"] == "https://sp.example"
    assert event["detail"]["code"] == event["detail"]["access_token"] == "<redacted>"
    assert "the-auth-code" not in str(store.db.audit_events())


def test_the_audit_row_redacts_exactly_what_the_audit_log_line_redacts(store, caplog):
    import json

    caplog.set_level("INFO", logger="satosa_orcid_plugin.audit")
    store.db.append_audit("login_hop", user_key=ALICE, nonce="the-nonce", authorization="Bearer the-bearer",
                cookie="the-cookie", nested={"refresh_token": "the-refresh"}, hint="eyJhbGciOi.eyJzdWIiOi.c2ln",
                requester="https://sp.example")

    [event] = store.db.audit_events(ALICE)
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "satosa_orcid_plugin.audit"]
    assert event["detail"] == line["detail"]
    assert event["detail"]["requester"] == "https://sp.example"
    for secret in ("the-nonce", "the-bearer", "the-cookie", "the-refresh", "eyJhbGciOi"):
        assert secret not in str(store.db.audit_events())


def test_the_audit_log_line_carries_the_time_of_its_row(make_store, token_cipher, caplog):
    import itertools
    import json

    ticks = itertools.count()
    store = make_store(token_cipher, clock=lambda: NOW + timedelta(seconds=next(ticks)))
    caplog.set_level("INFO", logger="satosa_orcid_plugin.audit")
    store.links.link(ALICE, orcid(1), tokens())

    [row] = store.db.audit_events(ALICE)
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "satosa_orcid_plugin.audit"]
    assert line["event"] == row["event"] == "link"
    assert line["at"] == row["at"].isoformat()


# --- keys ------------------------------------------------------------------------------
def test_key_rotation_keeps_old_tokens_readable_then_retires_the_old_key(make_store):
    old_key, new_key = TokenCipher.generate_key(), TokenCipher.generate_key()
    before = make_store(TokenCipher.from_keys([old_key]))
    for n in range(5):
        before.links.link(f"user{n}", orcid(n), tokens(str(n)))

    # Step 1: deploy the new key in front; old ciphertext still decrypts.
    both = make_store(TokenCipher.from_keys([new_key, old_key]))
    assert both.links.tokens("user3") == tokens("3")
    both.links.link("user9", orcid(9), tokens("9"))  # written under the new key already

    # Step 2: rotate. Rows already under the new key are not rewritten.
    assert both.vault.rotate_keys(batch_size=2) == 5
    assert both.vault.rotate_keys() == 0
    assert "keys_rotated" in events(both)

    # Step 3: drop the old key; every row decrypts with the new key alone.
    only_new = make_store(TokenCipher.from_keys([new_key]))
    for n in (*range(5), 9):
        assert only_new.links.tokens(f"user{n}") == tokens(str(n))

    with pytest.raises(StoreError, match="cannot be decrypted") as raised:
        make_store(TokenCipher.from_keys([old_key])).links.tokens("user1")
    assert "gAAAA" not in str(raised.value)  # no Fernet ciphertext in the message


def test_unlink_works_even_when_tokens_cannot_be_decrypted(make_store):
    make_store(TokenCipher.from_keys([TokenCipher.generate_key()])).links.link(ALICE, orcid(1), tokens())
    lost_key = make_store(TokenCipher.from_keys([TokenCipher.generate_key()]))

    link, returned = lost_key.links.unlink(ALICE)

    assert link.status == "unlinked" and returned is None


# --- user keys -------------------------------------------------------------------------
def test_hashed_user_keys_never_reach_the_database(make_store, token_cipher):
    store = make_store(token_cipher, user_key_secret=b"pepper-1")
    link = store.links.link(ALICE, orcid(1), tokens())
    store.decisions.record(BOB, "never", None)

    assert re.fullmatch(r"[0-9a-f]{64}", link.user_key)
    assert store.links.get_active(ALICE) == link
    assert store.links.tokens(ALICE) == tokens()
    assert store.decisions.get(BOB, NOW) == "never"
    assert [e["event"] for e in store.db.audit_events(ALICE)] == ["link"]
    with store.db.engine.connect() as conn:
        stored = {
            value
            for table in ("orcid_links", "orcid_decisions", "orcid_audit")
            for value in conn.execute(sa.text(f"SELECT user_key FROM {table}")).scalars()
        }
    assert ALICE not in stored and BOB not in stored

    other_secret = make_store(token_cipher, user_key_secret=b"pepper-2")
    assert other_secret.links.get_active(ALICE) is None


def test_sqlite_file_holds_no_token_in_clear(sqlite_url, tmp_path, token_cipher):
    store = Store.from_url(sqlite_url, token_cipher)
    store.db.upgrade()
    store.links.link(ALICE, orcid(1), tokens("secret"))
    store.links.link(BOB, orcid(2), tokens("other"))
    store.links.unlink(BOB)
    store.db.dispose()

    data = b"".join(p.read_bytes() for p in tmp_path.glob("orcid.sqlite*"))
    assert str(orcid(1)).encode() in data  # we are reading the right file
    for value in (*vars(tokens("secret")).values(), *vars(tokens("other")).values()):
        if isinstance(value, str) and value.startswith(("access-", "refresh-")):
            assert value.encode() not in data


# --- concurrency -----------------------------------------------------------------------
def _race(n_threads: int, call) -> list[BaseException]:
    """Run call(i) on n threads released at the same moment; return what they raised."""
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            call(i)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def _active_per_user(store: Store) -> Counter:
    return Counter(link.user_key for link in store.links.recent(status="active", limit=1000))


@pytest.mark.parametrize("same_id", [True, False], ids=["same-id", "different-ids"])
def test_sixteen_threads_linking_one_user_leave_one_active_link(store, same_id):
    errors = _race(16, lambda i: store.links.link(ALICE, orcid(1 if same_id else i + 1), tokens(str(i))))

    assert errors == []
    assert _active_per_user(store) == {ALICE: 1}
    active = store.links.get_active(ALICE)
    assert store.links.tokens(ALICE) is not None
    assert store.links.find_by_orcid(active.orcid) == active


def test_sixteen_users_racing_for_one_id_get_one_winner(store):
    errors = _race(16, lambda i: store.links.link(f"user{i}", orcid(1), tokens(str(i))))

    assert all(isinstance(e, LinkConflict) for e in errors), errors
    assert len(errors) == 15
    assert sum(_active_per_user(store).values()) == 1
    assert len([e for e in store.db.audit_events(limit=100) if e["event"] == "conflict"]) == 15


def test_sixteen_users_linking_their_own_ids_all_succeed(store):
    errors = _race(16, lambda i: store.links.link(f"user{i}", orcid(i + 1), tokens(str(i))))

    assert errors == []
    assert _active_per_user(store) == {f"user{i}": 1 for i in range(16)}


# --- schema and engine -----------------------------------------------------------------
def test_migrations_match_the_models(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}), Base.metadata)
    assert diff == []


def test_upgrade_from_several_processes_at_once(sqlite_url, token_cipher):
    script = (
        "import sys\n"
        "from satosa_orcid_plugin.store import Store\n"
        "from satosa_orcid_plugin.tokens import TokenCipher\n"
        "Store.from_url(sys.argv[1], TokenCipher.from_keys([TokenCipher.generate_key()])).db.upgrade()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, sqlite_url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0, 0, 0], results

    store = Store.from_url(sqlite_url, token_cipher)
    store.db.upgrade()
    assert store.links.link(ALICE, orcid(1), tokens()).status == "active"
    store.db.dispose()


def test_store_health_and_repr_hide_the_password(token_cipher):
    store = Store.from_url("postgresql+psycopg://orcid:s3cret@127.0.0.1:1/orcid", token_cipher)
    assert "s3cret" not in repr(store) and "***" in repr(store)
    assert store.db.health() is False
    with pytest.raises(StoreError):
        store.links.get_active(ALICE)
    store.db.dispose()


def test_store_health_when_up(store):
    assert store.db.health() is True


def test_unsupported_database_url_is_a_config_error(token_cipher):
    with pytest.raises(ConfigError):
        Store.from_url("mysql://localhost/orcid", token_cipher)


# --- tokens ----------------------------------------------------------------------------
def test_token_set_never_shows_its_values():
    t = tokens("shown")
    assert "access-shown" not in repr(t) and "refresh-shown" not in str(t)
    assert t.expires_at == NOW + timedelta(seconds=631138518)
    short = tokens(expires_in=599)
    assert short.expires_at == NOW + timedelta(seconds=599)


def test_token_cipher_keys_newest_first():
    new, old = TokenCipher.generate_key(), TokenCipher.generate_key()
    ciphertext = TokenCipher.from_keys([old]).encrypt("x")

    both = TokenCipher.from_keys(f"{new}, {old}".split(","))  # as SATOSA_ORCID_TOKEN_KEYS lists them
    assert both.decrypt(ciphertext) == "x"
    assert TokenCipher.from_keys([new]).decrypt(both.rotate(ciphertext)) == "x"
    assert new not in repr(both) and old not in repr(both)

    assert TokenCipher.from_keys([new, " ", old]).decrypt(ciphertext) == "x"  # newest first; blanks ignored

    with pytest.raises(ConfigError):
        TokenCipher.from_keys(["", " "])
    with pytest.raises(ConfigError) as bad:
        TokenCipher.from_keys(["not-a-key"])
    assert "not-a-key" not in str(bad.value)


def test_a_callback_state_is_consumed_once_across_the_whole_store(store):
    soon = datetime.now(timezone.utc) + timedelta(minutes=10)
    assert store.once.consume("state:abc", soon) is True
    assert store.once.consume("state:abc", soon) is False
    assert store.once.consume("state:other", soon) is True


def test_an_expired_marker_no_longer_blocks(store):
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    assert store.once.consume("state:old", past) is True
    assert store.once.consume("state:old", datetime.now(timezone.utc) + timedelta(minutes=1)) is True


def test_head_revision_constant_matches_the_migrations(store):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from satosa_orcid_plugin.store import HEAD_REVISION, MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
    assert store.db.schema_revision() == HEAD_REVISION
    store.db.upgrade()  # a no-op on a current schema
    assert store.db.schema_revision() == HEAD_REVISION


def test_refilled_per_client_buckets_are_forgotten_and_busy_ones_kept(store):
    now = [1000.0]
    limiters = {name: store.rate_limiter(rate=1, burst=2, name=name, clock=lambda: now[0])
                for name in ("connect:cA", "connect:cB", "connect:total")}
    for limiter in limiters.values():
        assert limiter.try_acquire() == 0.0 and limiter.try_acquire() == 0.0
    now[0] += 1.5  # half refilled: nothing may go (forgetting it would hand out a fresh burst)
    assert limiters["connect:cA"].forget_refilled("connect:c") == 0
    now[0] += 1.0  # refilled: a full bucket and no bucket are the same
    assert limiters["connect:cB"].try_acquire() == 0.0  # B is busy again
    assert limiters["connect:cA"].forget_refilled("connect:c") == 1  # A only; never the total bucket
    assert limiters["connect:cB"].try_acquire() == 0.0 and limiters["connect:cB"].try_acquire() > 0


# --- tokens waiting to be revoked ---------------------------------------------------------------
def claimed_tokens(store: Store, **kwargs) -> list[str]:
    return sorted(r.token for r in store.revocations.claim(10, **kwargs))


def test_a_link_write_queues_the_tokens_it_replaces_in_its_own_transaction(store):
    first = store.links.link(ALICE, orcid(1), tokens("1"))
    assert first.superseded == ()
    same = store.links.link(ALICE, orcid(1), tokens("1"))  # the same token again: nothing to revoke
    assert same.superseded == ()
    relinked = store.links.link(ALICE, orcid(1), tokens("2"))
    switched = store.links.link(ALICE, orcid(2), tokens("3"))
    moved = store.links.link(BOB, orcid(2), tokens("4"), on_conflict="move")
    assert [len(x.superseded) for x in (relinked, switched, moved)] == [1, 1, 1]
    assert claimed_tokens(store) == ["access-1-6f1c2b", "access-2-6f1c2b", "access-3-6f1c2b"]
    ciphertexts = store.db.scalars(sa.text("SELECT access_token_enc FROM orcid_revocations"))
    assert ciphertexts and not any("access-" in c for c in ciphertexts)  # encrypted at rest


def test_a_refused_link_queues_nothing_and_keeps_the_holders_tokens(store):
    store.links.link(BOB, orcid(1), tokens("bob"))
    with pytest.raises(LinkConflict):
        store.links.link(ALICE, orcid(1), tokens("alice"))
    assert store.revocations.waiting() == 0
    assert store.links.tokens(BOB).access_token == "access-bob-6f1c2b"


def test_a_claimed_revocation_is_leased_then_retried_or_done(make_store, token_cipher):
    clock = [NOW]
    store = make_store(token_cipher, clock=lambda: clock[0])
    rid = store.revocations.add("tok-a", orcid=orcid(1), reason="link_failed", error="orcid_unavailable",
                                delay_seconds=30)
    assert claimed_tokens(store) == []  # not due yet
    clock[0] = NOW + timedelta(seconds=31)
    [item] = store.revocations.claim(10)
    assert (item.id, item.token, item.reason, item.attempts) == (rid, "tok-a", "link_failed", 0)
    assert "tok-a" not in repr(item)
    assert claimed_tokens(store) == []  # leased: another worker does not take it too
    store.revocations.retry(item, "orcid_unavailable: 503", clock[0] + timedelta(seconds=60))
    clock[0] += timedelta(seconds=61)
    [again] = store.revocations.claim(10)
    assert again.attempts == 1
    store.revocations.done(again)
    assert store.revocations.waiting() == 0
    assert events(store)[-2:] == ["revocation_queued", "token_revoked"]


def test_a_crashed_drainers_lease_expires(make_store, token_cipher):
    clock = [NOW]
    store = make_store(token_cipher, clock=lambda: clock[0])
    store.revocations.add("tok-b", orcid=None, reason="pending_expired")
    assert claimed_tokens(store) == ["tok-b"]
    clock[0] += timedelta(seconds=120)
    assert claimed_tokens(store) == ["tok-b"]


def test_a_revocation_no_key_decrypts_is_dropped(make_store, token_cipher):
    make_store(token_cipher).revocations.add("tok-c", orcid=None, reason="relinked")
    other = make_store(TokenCipher.from_keys([TokenCipher.generate_key()]))
    assert claimed_tokens(other) == [] and other.revocations.waiting() == 0
    assert events(other)[-1] == "revocation_dropped"


def test_a_link_takes_back_its_write_ahead_revocation_unless_a_drain_leased_it(make_store, token_cipher):
    clock = [NOW]
    store = make_store(token_cipher, clock=lambda: clock[0])
    rid = store.revocations.intend("access-1-6f1c2b", orcid=orcid(1), reason="link_interrupted", grace_seconds=300)
    assert claimed_tokens(store) == []  # not due while the link write may still be running
    store.links.link(ALICE, orcid(1), tokens("1"), intent=rid)
    assert store.revocations.waiting() == 0
    late = store.revocations.intend("access-2-6f1c2b", orcid=orcid(2), reason="link_interrupted", grace_seconds=300)
    clock[0] += timedelta(seconds=301)
    assert claimed_tokens(store) == ["access-2-6f1c2b"]  # a drain is revoking it now
    with pytest.raises(StoreError):
        store.links.link(BOB, orcid(2), tokens("2"), intent=late)
    assert store.links.get_active(BOB) is None


def test_a_parked_login_is_encrypted_expires_and_is_taken_once(make_store, token_cipher):
    from datetime import datetime, timedelta, timezone

    now = [datetime(2026, 1, 1, 12, tzinfo=timezone.utc)]
    store = make_store(token_cipher, clock=lambda: now[0])
    login = {"kind": "hop", "flow": {"attributes": {"edupersonentitlement": [f"urn:x:{i}" for i in range(200)]}}}
    handle = store.parked.park(login, ttl=600)
    assert len(handle) <= 64 and store.parked.get(handle) == login  # any instance reads it by the handle
    with store.db.read_transaction() as session:
        [(stored, blob)] = session.execute(sa.text("SELECT handle_hash, data_enc FROM orcid_parked")).all()
    assert handle not in stored and "urn:x:" not in blob  # neither the handle nor the attributes in the clear
    assert store.parked.take(handle) == login
    assert store.parked.take(handle) is None and store.parked.get(handle) is None  # single use
    late = store.parked.park(login, ttl=600)
    now[0] += timedelta(seconds=601)
    assert store.parked.get(late) is None  # expired
    assert store.parked.purge_expired() == 1
    assert store.parked.take(late) is None
    assert store.parked.get("x" * 65) is None and store.parked.get(None) is None
    # another key set cannot read it (rotated away): a login that cannot resume, not a crash
    other = make_store(TokenCipher.from_keys([TokenCipher.generate_key()]))
    assert other.parked.get(store.parked.park(login, ttl=600)) is None
