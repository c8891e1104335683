"""History.append(if_new=…): creating a record checks for an existing version inside the write transaction,
so a create that raced past the caller's own check (another instance made the record meanwhile) is refused
and nothing is written; an edit (no if_new) of the same record appends a version and closes the one before."""

from types import SimpleNamespace

import pytest

from gis_service.errors import GisError
from gis_service.land.history import VERSIONS, History
from gis_service.store import SQLiteRecordStore

WHO = SimpleNamespace(name="测试员", role="rural")


def test_a_second_create_of_the_same_record_is_refused_inside_the_transaction(tmp_path):
    history = History(SQLiteRecordStore(tmp_path / "records.sqlite"))
    duplicate = GisError("duplicate_record", "已登记", "exists", 409)
    first = history.append("transfer", "LZ1|D1", "D1", "131002101001", {}, {"transferee": "甲"}, "2026-01-01",
                           WHO, None, if_new=duplicate)
    with pytest.raises(GisError) as err:
        history.append("transfer", "LZ1|D1", "D1", "131002101001", {}, {"transferee": "乙"}, "2026-01-02",
                       WHO, None, if_new=duplicate)
    assert err.value is duplicate
    assert [v["data"] for v in history.versions("transfer", "LZ1|D1")] == [{"transferee": "甲"}]
    # an edit of the record is a new version that closes the first
    history.append("transfer", "LZ1|D1", "D1", "131002101001", {}, {"transferee": "丙"}, "2026-01-03", WHO, None)
    versions = history.versions("transfer", "LZ1|D1")
    assert [(v["id"], v["valid_to"]) for v in versions] == [(first["id"], "2026-01-03"), (versions[1]["id"], None)]
    with history.records.reading() as tx:
        assert len(tx.find(VERSIONS)) == 2
