"""The PostgreSQL RecordStore keeps the embedded store's promises: the record-store tests of tests/store run
here unchanged against it (imported below, so pytest collects them with this module's ``records`` fixture),
plus what is specific to a server: a failed COMMIT, a column migration and several processes writing."""

import multiprocessing

import psycopg
import pytest

from gis_service.store import Column, Table
from gis_service.store.pgrecords import PostgresRecordStore
from tests.store.test_records import (  # noqa: F401  (collected here, on PostgreSQL)
    REPORTS, test_a_failed_transaction_leaves_nothing, test_after_id_reads_only_what_was_appended_since,
    test_ensure_refuses_to_run_inside_a_transaction, test_missing_required_field_and_unknown_column_are_errors,
    test_unique_key_reports_a_duplicate_and_keeps_the_first, test_values_round_trip_and_boxes_find_geometries)


@pytest.fixture(scope="module")
def database(pg_url):
    base = pg_url.rsplit("/", 1)[0]
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS records_tests")
        conn.execute("CREATE DATABASE records_tests")
    with psycopg.connect(base + "/records_tests", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    return base + "/records_tests"


@pytest.fixture()
def records(database):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS records CASCADE")
        conn.execute("CREATE SCHEMA records")
    store = PostgresRecordStore(database)
    store.ensure(REPORTS)
    return store


def test_a_failed_commit_rolls_back_and_the_next_transaction_commits(records, database):
    with psycopg.connect(database, autocommit=True) as conn:  # a deferred constraint fails at COMMIT
        conn.execute("CREATE TABLE records.parent (id integer PRIMARY KEY)")
        conn.execute("CREATE TABLE records.child (p integer REFERENCES records.parent(id) DEFERRABLE "
                     "INITIALLY DEFERRED)")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        with records.transaction() as tx:
            tx.insert(REPORTS, {"report_id": "lost"})
            tx._conn.execute("INSERT INTO records.child VALUES (42)")
    with records.transaction() as tx:
        tx.insert(REPORTS, {"report_id": "after"})
    with PostgresRecordStore(database).reading() as tx:
        assert [r["report_id"] for r in tx.find(REPORTS)] == ["after"]


def test_a_column_added_to_the_definition_is_migrated(records, database):
    with records.transaction() as tx:
        tx.insert(REPORTS, {"report_id": "old"})
    wider = Table(REPORTS.name, REPORTS.columns + (Column("reporter", "text"),), REPORTS.unique)
    store = PostgresRecordStore(database)
    store.ensure(wider)
    with store.transaction() as tx:
        tx.insert(wider, {"report_id": "new", "reporter": "张三"})
        assert [(r["report_id"], r["reporter"]) for r in tx.find(wider)] == [("old", None), ("new", "张三")]


def _writer(url, worker, n):
    store = PostgresRecordStore(url)
    store.ensure(REPORTS)
    for i in range(n):
        with store.transaction() as tx:
            tx.insert(REPORTS, {"report_id": f"{worker}-{i}", "depth_cm": i})
            if i % 10 == 0:  # a retry of an earlier report in the same transaction: refused, nothing else lost
                with pytest.raises(Exception):
                    tx.insert(REPORTS, {"report_id": f"{worker}-{i}", "depth_cm": i})


def test_several_processes_write_concurrently_ids_in_commit_order(records, database):
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(database, w, 150)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with records.reading() as tx:
        rows = tx.find(REPORTS)
    assert {r["report_id"] for r in rows} == {f"{w}-{i}" for w in range(3) for i in range(150)}
    assert len(rows) == 450
    per_worker = {}
    for r in rows:  # ids follow commit order: each worker's reports appear in the order it wrote them
        worker, i = r["report_id"].split("-")
        per_worker.setdefault(worker, []).append(int(i))
    assert all(seq == sorted(seq) for seq in per_worker.values())


def test_reading_is_one_snapshot_while_another_process_commits(records, database):
    with records.transaction() as tx:
        tx.insert(REPORTS, {"report_id": "before"})
    with records.reading() as snapshot:
        first = [r["report_id"] for r in snapshot.find(REPORTS)]
        with PostgresRecordStore(database).transaction() as other:  # another process, in effect
            other.insert(REPORTS, {"report_id": "during"})
        again = [r["report_id"] for r in snapshot.find(REPORTS)]
    assert first == again == ["before"]
    with records.reading() as tx:
        assert [r["report_id"] for r in tx.find(REPORTS)] == ["before", "during"]
