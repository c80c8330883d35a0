"""The audit hash chain: sealing, verification, and the database refusing tampering."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compliance.chain import GENESIS, audit_purge, audit_seal, audit_verify
from compliance.models import AdminNotice, AuditChainState, AuditEvent
from compliance.services import audit_record_many
from compliance.tasks import audit_seal_and_verify, audit_seal_now
from crm_platform.actor import Actor

pytestmark = pytest.mark.django_db

TABLE = AuditEvent._meta.db_table
ACTOR = Actor.system("tests", request_id="req-1")


def _write(n: int, **kwargs) -> None:
    audit_record_many(
        actor=ACTOR, action="test.write", object_type="tests.thing", rows=[(i, {"n": i}) for i in range(n)], **kwargs
    )


@contextmanager
def _as_table_owner_without_guard():
    """What an attacker owning the table could do: switch the guard off. verify must still
    see every change they make."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER USER")
        try:
            yield cursor
        finally:
            cursor.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER USER")


def _refused(sql: str, params=()) -> bool:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    except DatabaseError as error:
        return (
            "append-only" in str(error)
            or "cannot be deleted" in str(error)
            or "oldest end" in str(error)
            or ("checkpoint" in str(error))
        )
    return False


# ----------------------------------------------------------------------------- sealing


def test_rows_are_written_unsealed_and_sealed_in_id_order_with_contiguous_seqs():
    _write(5)
    assert AuditEvent.objects.filter(chain_seq__isnull=True).count() == 5
    assert audit_seal() == 5
    rows = list(AuditEvent.objects.order_by("id").values_list("chain_seq", "hash"))
    assert [seq for seq, _ in rows] == [1, 2, 3, 4, 5]
    assert all(len(h) == 64 for _, h in rows)
    assert audit_seal() == 0


def test_sealing_continues_the_chain_across_runs_and_small_batches():
    _write(7)
    assert audit_seal(batch_size=3) == 7
    _write(4)
    audit_seal(batch_size=2)
    assert list(AuditEvent.objects.order_by("chain_seq").values_list("chain_seq", flat=True)) == list(range(1, 12))
    result = audit_verify()
    assert result.ok and result.checked == 11 and result.head_seq == 11


def test_a_second_sealer_waits_for_nobody_and_seals_nothing_while_the_lock_is_held():
    _write(3)
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [0x61756469745F7365])
            assert audit_seal() == 0
            cursor.execute("ROLLBACK")
    finally:
        other.close()
    assert audit_seal() == 3


def test_the_seal_task_and_the_nightly_job_seal_and_verify():
    _write(2)
    assert audit_seal_now() == 2
    _write(1)
    outcome = audit_seal_and_verify()
    assert outcome == {"sealed": 1, "checked": 3, "broken": None}


# ----------------------------------------------------------------------------- the database refuses tampering


def test_update_of_any_column_is_refused_sealed_or_not():
    _write(2)
    first = AuditEvent.objects.order_by("id").first()
    assert _refused("UPDATE compliance_auditevent SET action = 'x' WHERE id = %s", [first.pk])
    audit_seal()
    assert _refused("UPDATE compliance_auditevent SET action = 'x' WHERE id = %s", [first.pk])
    assert _refused("UPDATE compliance_auditevent SET hash = %s WHERE id = %s", ["a" * 64, first.pk])
    assert _refused("UPDATE compliance_auditevent SET chain_seq = 99 WHERE id = %s", [first.pk])
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=first.pk).update(object_id="other")


def test_sealing_may_not_change_anything_else_in_the_same_update():
    _write(1)
    row = AuditEvent.objects.get()
    sql = "UPDATE compliance_auditevent SET chain_seq = 1, hash = %s, actor_id = 'me' WHERE id = %s"
    assert _refused(sql, ["b" * 64, row.pk])
    assert _refused("UPDATE compliance_auditevent SET chain_seq = 1, hash = 'not-a-hash' WHERE id = %s", [row.pk])


def test_delete_is_refused_for_recent_rows_sealed_or_not():
    _write(2)
    assert _refused("DELETE FROM compliance_auditevent")
    audit_seal()
    assert _refused("DELETE FROM compliance_auditevent")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 2


def test_truncate_is_refused_outside_test_databases():
    # Test databases allow TRUNCATE (transactional tests flush with it); swap in the answer a
    # production database has, inside this test's transaction, and try.
    _write(1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT compliance_audit_truncate_allowed()")
        assert cursor.fetchone()[0] is True
        cursor.execute(
            "CREATE OR REPLACE FUNCTION compliance_audit_truncate_allowed() RETURNS boolean "
            "LANGUAGE sql AS 'SELECT false'"
        )
    assert _refused_truncate(TABLE)
    assert _refused_truncate(AuditChainState._meta.db_table)
    assert AuditEvent.objects.count() == 1


def _refused_truncate(table: str) -> bool:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {table} CASCADE")
    except DatabaseError as error:
        return "refused" in str(error)
    return False


def test_the_checkpoint_cannot_be_changed_or_deleted_directly():
    assert _refused("UPDATE compliance_auditchainstate SET checkpoint_seq = 5, checkpoint_hash = %s", ["c" * 64])
    assert _refused("DELETE FROM compliance_auditchainstate")


# ----------------------------------------------------------------------------- verification


def test_audit_verify_passes_on_an_intact_chain(capsys):
    _write(3)
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "3 rows" in out.getvalue() and "intact" in out.getvalue()


def test_audit_verify_names_the_first_broken_link_and_exits_non_zero():
    _write(5)
    audit_seal()
    third = AuditEvent.objects.get(chain_seq=3)
    with _as_table_owner_without_guard() as cursor:
        cursor.execute("UPDATE compliance_auditevent SET actor_id = 'someone-else' WHERE id = %s", [third.pk])
    err = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("audit_verify", "--no-seal", stdout=StringIO(), stderr=err)
    assert exit_info.value.code == 1
    assert f"seq 3 (id {third.pk})" in err.getvalue()
    assert third.hash in err.getvalue()


def test_a_deleted_row_in_the_middle_is_a_gap():
    _write(4)
    audit_seal()
    with _as_table_owner_without_guard() as cursor:
        cursor.execute("DELETE FROM compliance_auditevent WHERE chain_seq = 2")
    result = audit_verify()
    assert not result.ok and result.broken.seq == 3 and result.broken.reason == "gap"


def test_the_nightly_job_logs_and_posts_an_admin_notice_on_a_break(caplog):
    _write(2)
    audit_seal()
    with _as_table_owner_without_guard() as cursor:
        cursor.execute("UPDATE compliance_auditevent SET action = 'rewritten' WHERE chain_seq = 1")
    outcome = audit_seal_and_verify()
    assert outcome["broken"].startswith("audit chain broken at seq 1")
    assert "audit chain broken" in caplog.text
    notice = AdminNotice.objects.get(source="audit_chain")
    assert notice.level == AdminNotice.Level.ERROR and "seq 1" in notice.title


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    position=st.integers(min_value=1, max_value=6),
    column=st.sampled_from(["action", "actor_id", "object_type", "object_id", "request_id", "changes", "occurred_at"]),
)
def test_any_edit_of_any_sealed_row_is_found_at_that_row(position, column):
    try:
        with transaction.atomic():
            _write(6)
            audit_seal()
            target = AuditEvent.objects.order_by("chain_seq")[position - 1]
            value = {
                "changes": '{"n": {"old": null, "new": -1}}',
                "occurred_at": timezone.now() - timedelta(seconds=1),
            }.get(column, "tampered")
            with _as_table_owner_without_guard() as cursor:
                sql = f"UPDATE compliance_auditevent SET {column} = %s WHERE id = %s"  # noqa: S608
                cursor.execute(sql, [value, target.pk])
            result = audit_verify()
            assert not result.ok
            assert (result.broken.seq, result.broken.id) == (target.chain_seq, target.pk)
            raise _Rollback
    except _Rollback:
        pass


class _Rollback(Exception):
    pass


# ----------------------------------------------------------------------------- retention


def _old(n: int, years: int = 7) -> None:
    when = timezone.now() - timedelta(days=365 * years)
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(occurred_at=when, actor_kind="system", actor_id="t", action="old", object_id=str(i))
            for i in range(n)
        ]
    )


def test_retention_purges_the_oldest_end_and_verify_still_passes_from_the_checkpoint():
    _old(4)
    _write(2)
    audit_seal()
    fourth = AuditEvent.objects.get(chain_seq=4)
    assert audit_purge(batch_size=3) == 4
    state = AuditChainState.objects.get()
    assert (state.checkpoint_seq, state.checkpoint_hash, state.purged_rows) == (4, fourth.hash, 4)
    result = audit_verify()
    assert result.ok and result.checked == 2
    _write(1)
    audit_seal()
    assert audit_verify().ok


def test_retention_may_not_cut_a_hole_in_the_middle_of_the_chain():
    _old(3)
    audit_seal()
    assert _refused("DELETE FROM compliance_auditevent WHERE chain_seq = 2")
    assert _refused("DELETE FROM compliance_auditevent WHERE chain_seq IN (1, 3)")
    assert AuditEvent.objects.count() == 3
    assert AuditChainState.objects.get().checkpoint_hash is None


def test_retention_leaves_unsealed_and_young_rows_alone():
    _old(2)
    audit_seal()
    _write(1)
    audit_seal()
    _old(1)  # old time, but unsealed: never purged
    assert audit_purge() == 2
    assert AuditEvent.objects.count() == 2
    assert audit_verify().ok
    assert GENESIS != AuditChainState.objects.get().checkpoint_hash


@pytest.mark.django_db(transaction=True)
def test_transactional_tests_can_still_flush_the_audit_table():
    # pytest-django empties every table with TRUNCATE after a transactional test: the guard
    # allows that in test databases only (decided by migration 0003 from the database name).
    _write(2)
    assert audit_seal() == 2


def test_the_update_guard_names_every_column_but_the_seal():
    # UPDATE OF <columns> refuses any change to them: a column added to AuditEvent must be listed
    # there too (a new migration replacing compliance_audit_guard_columns), or it could be edited.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attname FROM pg_trigger t JOIN pg_attribute a "
            "ON a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr::int2[]) "
            "WHERE t.tgname = 'compliance_audit_guard_columns'"
        )
        guarded = {row[0] for row in cursor.fetchall()}
    columns = {field.column for field in AuditEvent._meta.concrete_fields}
    assert guarded == columns - {"chain_seq", "hash"}


def test_a_legal_hold_keeps_its_contacts_trail_and_everything_after_it():
    from compliance.models import LegalHold
    from contacts.tests.factories import ContactFactory

    contact = ContactFactory()
    when = timezone.now() - timedelta(days=365 * 7)
    _old(2)
    AuditEvent.objects.create(occurred_at=when, actor_kind="system", actor_id="t", action="old", subject_id=contact.pk)
    _old(2)
    audit_seal()
    LegalHold.objects.create(contact=contact, reason="litigation")
    assert audit_purge() == 2
    assert sorted(AuditEvent.objects.values_list("chain_seq", flat=True)) == [3, 4, 5]
    LegalHold.objects.update(released_at=timezone.now())
    assert audit_purge() == 3
    assert audit_verify().ok
