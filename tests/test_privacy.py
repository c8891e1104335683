"""Masking: the SQL form (used by the store) and the Python form (maps, exports) agree."""

import sqlite3

import pytest

from gis_service.privacy import mask_sql, mask_value

SAMPLES = {"name": ["张伟", "欧阳娜娜", "李", None], "id_number": ["131002199001011234", "13100219900101123X", "12345", None],
           "phone": ["13812345678", "123456", None]}


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_sql_and_python_masking_agree(kind):
    conn = sqlite3.connect(":memory:")
    for value in SAMPLES[kind]:
        got = conn.execute(f"SELECT {mask_sql(kind, 'v')} FROM (SELECT ? AS v)", (value,)).fetchone()[0]
        assert got == mask_value(kind, value)


def test_masks_by_hand():
    assert mask_value("name", "欧阳娜娜") == "欧***"
    assert mask_value("id_number", "131002199001011234") == "1310**********1234"
    assert mask_value("phone", "13812345678") == "138****5678"


def test_withheld_is_no_value_at_all_and_only_without_a_key():
    """Issue #9 §8: without a key no person at all (null), a signed-in role not entitled the masked value."""
    from gis_service.catalog import WITHHELD, FieldDef, LayerDef

    conn = sqlite3.connect(":memory:")
    for value in ("张伟", "13812345678", None):
        assert conn.execute(f"SELECT {mask_sql(WITHHELD, 'v')} FROM (SELECT ? AS v)", (value,)).fetchone()[0] is None
        assert mask_value(WITHHELD, value) is None
    from pathlib import Path

    layer = LayerDef(id="p", group="g", title_zh="p", title_en="p", geometry="Polygon", access="public",
                     path=Path("p.toml"), fields=(
        FieldDef("code", "string", "编码"), FieldDef("owner", "string", "承包方", personal="name")),
        personal_roles=("rural",))
    assert layer.masked_fields(None) == {"owner": WITHHELD}
    assert layer.masked_fields("planner") == {"owner": "name"}
    assert layer.masked_fields("rural") == {} == layer.masked_fields("admin")
