"""The migration history reproduces the customer's schema and upgrades their data in place."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import billing.models  # noqa: F401  (each registers its tables on the shared metadata)
import bot_gateway.models  # noqa: F401
import jobs.models  # noqa: F401
from imagebot.database import AdoptionError, adopt
from messaging.database import metadata
from support.database import DatabaseFactory, alembic_config, migrate

HEAD = ScriptDirectory.from_config(alembic_config("unused")).get_current_head()

# The seed (../shared/seed/000_b7232ac8665fab9e.txt), column by column:
# name -> (type, max length, nullable, server default).
SEED_COLUMNS: dict[str, dict[str, tuple[str, int | None, bool, str | None]]] = {
    "users": {
        "user_id": ("integer", None, False, "nextval"),
        "telegram_id": ("bigint", None, True, None),  # widened from integer by design
        "username": ("character varying", 100, True, None),
        "balance": ("numeric", None, True, None),  # exact decimals by design (0018)
        "created_at": ("timestamp with time zone", None, True, "now()"),
    },
    "presets": {
        "id": ("integer", None, False, "nextval"),
        "category": ("character varying", 50, True, None),
        "name": ("character varying", 100, True, None),
        "prompt": ("text", None, True, None),
        "icon": ("character varying", 255, True, None),
        "price": ("double precision", None, True, None),
        "order_index": ("integer", None, True, None),
        "workflow_type": ("character varying", 50, True, "'qwen_edit_2511'::character varying"),
    },
    "jobs": {
        "id": ("integer", None, False, "nextval"),
        "user_id": ("integer", None, True, None),
        "image_path": ("character varying", 255, True, None),
        "prompt": ("text", None, True, None),
        "status": ("USER-DEFINED", None, True, None),
        "result_path": ("character varying", 255, True, None),
        "error": ("text", None, True, None),
        "retry_count": ("integer", None, True, None),
        "created_at": ("timestamp with time zone", None, True, "now()"),
        "updated_at": ("timestamp with time zone", None, True, None),
    },
    "payment_logs": {
        "id": ("integer", None, False, "nextval"),
        "user_id": ("integer", None, True, None),
        "amount": ("double precision", None, True, None),
        "status": ("character varying", 50, True, None),
        "payment_id": ("character varying", 100, True, None),
        "created_at": ("timestamp with time zone", None, True, "now()"),
    },
    "payments": {
        "id": ("integer", None, False, "nextval"),
        "user_id": ("integer", None, True, None),
        "yukassa_payment_id": ("character varying", 100, True, None),
        "amount": ("integer", None, True, None),
        "currency": ("character varying", 3, True, None),
        "status": ("USER-DEFINED", None, True, None),
        "payment_type": ("USER-DEFINED", None, True, None),
        "payment_method": ("character varying", 50, True, None),
        "payment_method_details": ("text", None, True, None),
        "description": ("text", None, True, None),
        "confirmation_url": ("character varying", 500, True, None),
        "created_at": ("timestamp with time zone", None, True, "now()"),
        "updated_at": ("timestamp with time zone", None, True, "now()"),
        "paid_at": ("timestamp with time zone", None, True, None),
    },
}
SEED_ENUMS = {
    "jobstatus": ["queued", "processing", "completed", "failed"],
    "paymentstatus": ["pending", "succeeded", "failed", "cancelled"],
    "paymenttype": ["payment", "weekly_bonus", "refund"],
}
SEED_INDEXES = {  # (table, index name, columns, unique)
    ("users", "ix_users_user_id", ("user_id",), False),
    ("users", "ix_users_telegram_id", ("telegram_id",), True),
    ("users", "ix_users_username", ("username",), False),
    ("presets", "ix_presets_id", ("id",), False),
    ("presets", "ix_presets_category", ("category",), False),
    ("presets", "ix_presets_name", ("name",), False),
    ("presets", "ix_presets_order_index", ("order_index",), False),
    ("jobs", "ix_jobs_id", ("id",), False),
    ("payment_logs", "ix_payment_logs_id", ("id",), False),
    ("payments", "ix_payments_id", ("id",), False),
    ("payments", "ix_payments_yukassa_payment_id", ("yukassa_payment_id",), True),
}
SEED_FOREIGN_KEYS = {
    ("jobs", "user_id", "users", "user_id"),
    ("payment_logs", "user_id", "users", "user_id"),
    ("payments", "user_id", "users", "user_id"),
}


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _default(default: str | None) -> str | None:
    return "nextval" if default and default.startswith("nextval") else default


async def _columns(connection: asyncpg.Connection, table: str) -> dict[str, tuple[Any, ...]]:
    rows = await connection.fetch(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
        table,
    )
    return {
        row["column_name"]: (
            row["data_type"],
            row["character_maximum_length"],
            row["is_nullable"] == "YES",
            "nextval"
            if (row["column_default"] or "").startswith("nextval")
            else row["column_default"],
        )
        for row in rows
    }


async def _schema(url: str) -> dict[str, Any]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:

        def read(sync: Any) -> dict[str, Any]:
            inspector = inspect(sync)
            present = [table for table in SEED_COLUMNS if inspector.has_table(table)]
            return {
                "tables": set(inspector.get_table_names()),
                "indexes": {
                    (table, index["name"], tuple(index["column_names"]), index["unique"])
                    for table in present
                    for index in inspector.get_indexes(table)
                },
                "foreign_keys": {
                    (
                        table,
                        fk["constrained_columns"][0],
                        fk["referred_table"],
                        fk["referred_columns"][0],
                    )
                    for table in present
                    for fk in inspector.get_foreign_keys(table)
                },
                "enums": {enum["name"]: enum["labels"] for enum in inspector.get_enums()},
                "primary_keys": {
                    table: tuple(inspector.get_pk_constraint(table)["constrained_columns"])
                    for table in present
                },
            }

        schema = await connection.run_sync(read)
    await engine.dispose()
    return schema


async def test_head_is_exactly_the_seed_schema(databases: DatabaseFactory) -> None:
    url = await databases.create("seed_schema")
    await migrate(url)
    schema = await _schema(url)
    assert set(SEED_COLUMNS) <= schema["tables"]
    own = schema["tables"] - set(SEED_COLUMNS) - {"alembic_version"}
    assert own <= set(metadata.tables), own  # services' own tables, each in some service's models
    connection = await asyncpg.connect(_dsn(url))
    try:
        for table, columns in SEED_COLUMNS.items():
            # Services may add columns beside the seed's (their own tests pin those down);
            # the seed's columns stay exactly as they were.
            actual = await _columns(connection, table)
            assert {name: actual.get(name) for name in columns} == columns, table
    finally:
        await connection.close()
    assert schema["enums"] == SEED_ENUMS
    assert schema["indexes"] >= SEED_INDEXES
    assert schema["foreign_keys"] == SEED_FOREIGN_KEYS
    assert schema["primary_keys"] == {
        "users": ("user_id",), "presets": ("id",), "jobs": ("id",),
        "payment_logs": ("id",), "payments": ("id",),
    }  # fmt: skip


async def test_models_and_migrations_do_not_drift(databases: DatabaseFactory) -> None:
    url = await databases.create("drift")
    await migrate(url)
    await asyncio.to_thread(command.check, alembic_config(url))


async def test_downgrade_to_base_and_upgrade_again(databases: DatabaseFactory) -> None:
    url = await databases.create("round_trip")
    await migrate(url)
    await migrate(url, "base", down=True)
    assert (await _schema(url))["tables"] == {"alembic_version"}
    assert (await _schema(url))["enums"] == {}
    await migrate(url)
    assert set(SEED_COLUMNS) <= (await _schema(url))["tables"]


async def test_every_revision_steps_down_and_up(databases: DatabaseFactory) -> None:
    url = await databases.create("stepwise")
    for revision in ("0001", "0002", "0003", "0004", "0005"):
        await migrate(url, revision)
        if revision != "0001":
            await migrate(url, "-1", down=True)
            await migrate(url, revision)


async def test_a_database_at_the_first_revision_keeps_its_rows(databases: DatabaseFactory) -> None:
    url = await databases.create("legacy_rows")
    await migrate(url, "0001")
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute(
            "INSERT INTO users (telegram_id, username, balance) VALUES (123456789, 'anna', 42.0);"
            'INSERT INTO presets (category, name, prompt, icon, price, "order") VALUES '
            "('фото', 'Ретушь', 'retouch the portrait', 'r.png', 30.0, 3),"
            "('стилизация', 'Аниме', 'anime style', 'a.png', 25.0, 7);"
            "INSERT INTO jobs (user_id, image_path, prompt, status, retry_count) "
            "VALUES (1, 'in/1.jpg', 'retouch', 'completed', 1);"
            "INSERT INTO payments (user_id, yukassa_payment_id, amount, currency, status, "
            "payment_type) VALUES (1, 'yk-1', 19900, 'RUB', 'cancelled', 'payment');"
            "INSERT INTO payment_logs (user_id, amount, status, payment_id) "
            "VALUES (1, 199.0, 'ok', 'yk-1');"
        )
        await migrate(url)
        presets = await connection.fetch(
            "SELECT name, order_index, workflow_type FROM presets ORDER BY id"
        )
        assert [tuple(row) for row in presets] == [
            ("Ретушь", 3, "qwen_edit_2511"),
            ("Аниме", 7, "qwen_edit_2511"),
        ]
        user = await connection.fetchrow("SELECT telegram_id, username, balance FROM users")
        assert tuple(user) == (123456789, "anna", 42.0)
        await connection.execute("UPDATE users SET telegram_id = $1", 2**40)  # now fits
        job = await connection.fetchrow("SELECT user_id, status::text, retry_count FROM jobs")
        assert tuple(job) == (1, "completed", 1)
        payment = await connection.fetchrow("SELECT status::text, amount FROM payments")
        assert tuple(payment) == ("cancelled", 19900)
        assert await connection.fetchval("SELECT count(*) FROM payment_logs") == 1
    finally:
        await connection.close()


async def test_downgrade_to_the_first_revision_restores_the_legacy_shape(
    databases: DatabaseFactory,
) -> None:
    url = await databases.create("legacy_down")
    await migrate(url)
    await migrate(url, "0001", down=True)
    schema = await _schema(url)
    assert ("presets", "ix_presets_order", ("order",), False) in schema["indexes"]
    connection = await asyncpg.connect(_dsn(url))
    try:
        presets = await _columns(connection, "presets")
        users = await _columns(connection, "users")
    finally:
        await connection.close()
    assert "workflow_type" not in presets
    assert users["telegram_id"][0] == "integer"


@pytest.mark.parametrize("shape", ["0001", "0002", "0003"])
async def test_a_customer_database_without_our_history_is_adopted_in_place(
    databases: DatabaseFactory, shape: str
) -> None:
    """Their database carries their own revision id; its shape says where it stands."""
    url = await databases.create(f"adopt_{shape}")
    await migrate(url, shape)
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute(
            "UPDATE alembic_version SET version_num = 'a1b2c3d4e5f6';"
            "INSERT INTO users (telegram_id, username, balance) VALUES (42, 'boris', 17.0);"
        )
        adopted = await asyncio.to_thread(adopt, alembic_config(url))
        await migrate(url)
        assert adopted == shape
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == HEAD
        user = await connection.fetchrow("SELECT telegram_id, username, balance FROM users")
        assert tuple(user) == (42, "boris", 17.0)
    finally:
        await connection.close()


async def test_adoption_leaves_empty_and_already_managed_databases_alone(
    databases: DatabaseFactory,
) -> None:
    empty = await databases.create("adopt_empty")
    assert await asyncio.to_thread(adopt, alembic_config(empty)) is None
    ours = await databases.create("adopt_ours")
    await migrate(ours, "0004")
    assert await asyncio.to_thread(adopt, alembic_config(ours)) is None


async def test_a_database_with_only_some_seed_tables_is_refused(databases: DatabaseFactory) -> None:
    url = await databases.create("adopt_partial")
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute("CREATE TABLE users (user_id serial PRIMARY KEY)")
    finally:
        await connection.close()
    with pytest.raises(AdoptionError, match="seed tables missing"):
        await asyncio.to_thread(adopt, alembic_config(url))


# The customer's `users.balance` is a double precision: what their bot left there, fractions
# and float noise included (0.1 + 0.2 is 0.30000000000000004 in a double), as SQL literals.
FRACTIONAL_BALANCES = {
    1001: ("12.5", Decimal("12.5")),
    1002: ("0.3", Decimal("0.3")),
    1003: ("0.1::float8 + 0.2::float8", Decimal("0.3")),
    1004: ("59.7::float8 - 0.4::float8", Decimal("59.3")),
    1005: ("0.000001", Decimal("0.000001")),
    1006: ("100", Decimal(100)),
    1007: ("0", Decimal(0)),
    1008: ("2.5", Decimal("2.5")),  # 0006 rounds this one down (to even), 12.5 too
}


async def _customer_database(databases: DatabaseFactory, label: str, balances: Any) -> str:
    """A database of the customer's shape, under their own revision id, holding `balances`."""
    url = await databases.create(label)
    await migrate(url, "0001")
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute("UPDATE alembic_version SET version_num = 'a1b2c3d4e5f6'")
        for telegram_id, (literal, _) in balances.items():
            await connection.execute(
                "INSERT INTO users (telegram_id, username, balance) "
                f"VALUES ($1, 'customer', {literal})",
                telegram_id,
            )
    finally:
        await connection.close()
    return url


async def _balances_and_ledger(url: str) -> dict[int, tuple[Any, Any]]:
    connection = await asyncpg.connect(_dsn(url))
    try:
        rows = await connection.fetch(
            "SELECT u.telegram_id, u.balance, (SELECT COALESCE(sum(amount), 0) "
            "FROM billing_ledger l WHERE l.user_id = u.user_id) AS ledger FROM users u"
        )
    finally:
        await connection.close()
    return {row["telegram_id"]: (row["balance"], row["ledger"]) for row in rows}


async def test_an_adopted_database_keeps_every_fractional_balance_exactly(
    databases: DatabaseFactory,
) -> None:
    url = await _customer_database(databases, "adopt_fractions", FRACTIONAL_BALANCES)
    assert await asyncio.to_thread(adopt, alembic_config(url)) == "0001"
    await migrate(url)
    found = await _balances_and_ledger(url)
    expected = {tid: (exact, exact) for tid, (_, exact) in FRACTIONAL_BALANCES.items()}
    assert found == expected  # the balance, to the millionth, and the ledger sum equal to it
    connection = await asyncpg.connect(_dsn(url))
    try:
        fractions = await connection.fetch(
            "SELECT u.telegram_id, l.amount FROM billing_ledger l JOIN users u USING (user_id) "
            "WHERE l.idempotency_key LIKE 'opening_fraction:%' ORDER BY u.telegram_id"
        )
        # 0006's opening entries rounded 12.5 and 2.5 (to even) and 0.3: 0018 adds what they lost
        assert [tuple(row) for row in fractions] == [
            (1001, Decimal("0.5")),
            (1002, Decimal("0.3")),
            (1003, Decimal("0.3")),
            (1004, Decimal("0.3")),
            (1005, Decimal("0.000001")),
            (1008, Decimal("0.5")),
        ]
        # and the balance still never goes below zero
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("UPDATE users SET balance = balance - 12.500001 "
                                     "WHERE telegram_id = 1001")  # fmt: skip
    finally:
        await connection.close()


async def test_a_database_adopted_before_exact_balances_gets_its_rounded_fraction_back(
    databases: DatabaseFactory,
) -> None:
    """Adopted by an earlier release (0006 rounded the opening entry), then debited by it in
    whole credits: 0018 restores the lost fraction and nothing else; any other drift stays
    for the audit to report."""
    balances = {2001: ("12.5", None), 2002: ("40", None)}
    url = await _customer_database(databases, "adopted_before", balances)
    await asyncio.to_thread(adopt, alembic_config(url))
    await migrate(url, "0017")
    connection = await asyncpg.connect(_dsn(url))
    try:  # the earlier release debited 10 from each; someone moved 2002's balance by hand
        await connection.execute(
            "UPDATE users SET balance = balance - 10;"
            "INSERT INTO billing_ledger (user_id, idempotency_key, kind, amount, balance_after) "
            "SELECT user_id, 'debit:job:' || user_id, 'debit', -10, round(balance) FROM users;"
            "UPDATE users SET balance = balance + 1 WHERE telegram_id = 2002"
        )
        await migrate(url)
        found = await _balances_and_ledger(url)
        assert found == {2001: (Decimal("2.5"), Decimal("2.5")), 2002: (31, 30)}
        await migrate(url, "0017", down=True)  # the fraction entries go with the revision
        found = await _balances_and_ledger(url)
        assert found == {2001: (2.5, 2), 2002: (31.0, 30)}
    finally:
        await connection.close()


async def test_a_balance_finer_than_a_millionth_is_refused_before_anything_changes(
    databases: DatabaseFactory,
) -> None:
    balances = {3001: ("1.0::float8 / 3", None), 3002: ("12.5", None)}
    url = await _customer_database(databases, "adopt_finer", balances)
    await asyncio.to_thread(adopt, alembic_config(url))
    with pytest.raises(Exception, match=r"finer than a millionth of a credit: users 1 \("):
        await migrate(url)
    connection = await asyncpg.connect(_dsn(url))
    try:
        kind = "SELECT data_type FROM information_schema.columns WHERE table_name = 'users' "
        assert await connection.fetchval(kind + "AND column_name = 'balance'") == (
            "double precision"
        )
        # the whole upgrade rolled back: the database is as it was adopted
        assert await connection.fetchval("SELECT version_num FROM alembic_version") == "0001"
        # the operator sets what the balance stands for, and the upgrade goes on
        await connection.execute("UPDATE users SET balance = 0.333333 WHERE telegram_id = 3001")
        await migrate(url)
        found = await _balances_and_ledger(url)
        assert found == {
            3001: (Decimal("0.333333"), Decimal("0.333333")),
            3002: (Decimal("12.5"), Decimal("12.5")),
        }
    finally:
        await connection.close()


async def test_active_at_is_filled_from_each_users_last_request(databases: DatabaseFactory) -> None:
    """0027: a user's `active_at` is their last request's time, or when they joined."""
    url = await databases.create("active_at")
    await migrate(url, "0026")
    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute(
            "INSERT INTO gateway_users (telegram_id, user_id, chat_id, created_at) VALUES "
            "(1, 1, 1, '2026-01-01Z'), (2, 2, 2, '2026-02-01Z'), (3, 3, 3, '2026-03-01Z');"
            "INSERT INTO gateway_jobs (request_id, telegram_id, user_id, chat_id, language, "
            "title, phase, created_at) VALUES "
            "(gen_random_uuid(), 1, 1, 1, 'ru', 't', 'completed', '2026-05-01Z'),"
            "(gen_random_uuid(), 1, 1, 1, 'ru', 't', 'completed', '2026-04-01Z'),"
            "(gen_random_uuid(), 2, 2, 2, 'ru', 't', 'completed', '2026-01-15Z')"
        )
        await migrate(url)
        rows = await connection.fetch(
            "SELECT telegram_id, (active_at AT TIME ZONE 'UTC')::date::text "
            "FROM gateway_users ORDER BY telegram_id"
        )
        assert [tuple(row) for row in rows] == [
            (1, "2026-05-01"),  # the last of two requests
            (2, "2026-02-01"),  # a request older than the row (an adopted history): joined
            (3, "2026-03-01"),  # never asked: joined
        ]
    finally:
        await connection.close()
