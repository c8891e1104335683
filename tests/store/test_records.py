"""The writable record store: transactions are all-or-nothing, unique keys make retries idempotent,
geometries round-trip and are found by box, and several processes can write at once."""

import multiprocessing
import sqlite3

import pytest
import shapely

from gis_service.errors import GisError
from gis_service.store import Column, DuplicateRecord, SQLiteRecordStore, Table

REPORTS = Table("test_reports", (Column("report_id", "text", required=True), Column("depth_cm", "real"),
                                 Column("tags", "json"), Column("closed", "boolean"), Column("where", "geometry")),
                unique=(("report_id",),), indexes=(("depth_cm",),))


@pytest.fixture()
def records(tmp_path):
    store = SQLiteRecordStore(tmp_path / "records.sqlite")
    store.ensure(REPORTS)
    return store


def test_a_failed_transaction_leaves_nothing(records):
    with records.transaction() as tx:
        tx.insert(REPORTS, {"report_id": "a", "depth_cm": 10})
    with pytest.raises(RuntimeError):
        with records.transaction() as tx:
            tx.insert(REPORTS, {"report_id": "b", "depth_cm": 20})
            tx.update(REPORTS, 1, {"depth_cm": 99})
            raise RuntimeError("crash mid-way")
    with records.transaction() as tx:
        rows = tx.find(REPORTS)
    assert [(r["report_id"], r["depth_cm"]) for r in rows] == [("a", 10)]


def test_unique_key_reports_a_duplicate_and_keeps_the_first(records):
    with records.transaction() as tx:
        first = tx.insert(REPORTS, {"report_id": "r1", "depth_cm": 31})
    with pytest.raises(DuplicateRecord) as err:
        with records.transaction() as tx:
            tx.insert(REPORTS, {"report_id": "r1", "depth_cm": 5})
    assert err.value.status == 409 and err.value.key == {"report_id": "r1"}
    with records.transaction() as tx:
        assert tx.get(REPORTS, first)["depth_cm"] == 31 and len(tx.find(REPORTS)) == 1


def test_values_round_trip_and_boxes_find_geometries(records):
    square = shapely.box(116.70, 39.50, 116.71, 39.51)
    with records.transaction() as tx:
        tx.insert(REPORTS, {"report_id": "p", "tags": {"来源": "巡查", "n": [1, 2]}, "closed": True,
                            "where": square})
        tx.insert(REPORTS, {"report_id": "q", "closed": False, "where": shapely.Point(116.9, 39.9)})
    with records.transaction() as tx:
        row = tx.find(REPORTS, {"report_id": "p"})[0]
        inside = tx.find(REPORTS, bbox=(116.705, 39.505, 116.8, 39.6))
        ordered = tx.find(REPORTS, order_by=(("report_id", False),))
    assert row["tags"] == {"来源": "巡查", "n": [1, 2]} and row["closed"] is True and row["where"].equals(square)
    assert [r["report_id"] for r in inside] == ["p"]
    assert [r["report_id"] for r in ordered] == ["q", "p"]


def test_missing_required_field_and_unknown_column_are_errors(records):
    with records.transaction() as tx:
        with pytest.raises(GisError) as err:
            tx.insert(REPORTS, {"depth_cm": 1})
        assert err.value.status == 422
        with pytest.raises(GisError):
            tx.find(REPORTS, {"nosuch": 1})


def test_a_column_added_to_the_definition_is_migrated(tmp_path, records):
    with records.transaction() as tx:
        tx.insert(REPORTS, {"report_id": "old"})
    wider = Table(REPORTS.name, REPORTS.columns + (Column("reporter", "text"),), REPORTS.unique)
    store = SQLiteRecordStore(tmp_path / "records.sqlite")
    store.ensure(wider)
    with store.transaction() as tx:
        tx.insert(wider, {"report_id": "new", "reporter": "张三"})
        assert [(r["report_id"], r["reporter"]) for r in tx.find(wider)] == [("old", None), ("new", "张三")]


def _writer(path, worker, n):
    store = SQLiteRecordStore(path)
    store.ensure(REPORTS)
    for i in range(n):
        with store.transaction() as tx:
            tx.insert(REPORTS, {"report_id": f"{worker}-{i}", "depth_cm": i})


def test_several_processes_write_concurrently_without_losing_a_record(tmp_path):
    path = tmp_path / "records.sqlite"
    SQLiteRecordStore(path).ensure(REPORTS)
    procs = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, w, 200)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with SQLiteRecordStore(path).transaction() as tx:
        ids = {r["report_id"] for r in tx.find(REPORTS)}
    assert ids == {f"{w}-{i}" for w in range(3) for i in range(200)}


def test_invalid_table_definitions_are_refused():
    with pytest.raises(ValueError):
        Table("bad name", (Column("a", "text"),))
    with pytest.raises(ValueError):
        Table("t", (Column("a", "money"),))
    with pytest.raises(ValueError):
        Table("t", (Column("a", "text"),), unique=(("b",),))


def test_a_failed_commit_rolls_back_and_the_next_transaction_commits(records, tmp_path):
    conn = records._connection()  # a deferred constraint fails at COMMIT, not at the insert
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError):
        with records.transaction() as tx:
            tx.insert(REPORTS, {"report_id": "lost"})
            conn.execute("INSERT INTO child VALUES (42)")
    assert not conn.in_transaction
    with records.transaction() as tx:
        tx.insert(REPORTS, {"report_id": "after"})
    other = SQLiteRecordStore(tmp_path / "records.sqlite")
    with other.transaction() as tx:
        assert [r["report_id"] for r in tx.find(REPORTS)] == ["after"]


def test_ensure_refuses_to_run_inside_a_transaction(records):
    with records.transaction():
        with pytest.raises(RuntimeError):
            records.ensure(Table("late", (Column("a", "text"),)))


def test_after_id_reads_only_what_was_appended_since(records):
    with records.transaction() as tx:
        first = [tx.insert(REPORTS, {"report_id": f"r{i}", "depth_cm": i}) for i in range(3)]
    with records.transaction() as tx:
        assert [r["report_id"] for r in tx.find(REPORTS, after_id=first[1])] == ["r2"]
        assert tx.find(REPORTS, after_id=first[2]) == []
        assert len(tx.find(REPORTS, after_id=0)) == 3
