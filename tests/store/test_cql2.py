"""CQL2 through cql2-rs and our translation, checked on a small GeoPackage against pandas and shapely.

The layer is built here with every field type, dates and instants on both sides of the UTC day boundary
and of 00:00 in Beijing (+08:00). Every expected answer is computed from the frame that was written,
with pandas timestamps and shapely, never from the code under test.
"""

from __future__ import annotations

import dataclasses
import json

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from gis_service.catalog import FieldDef, LayerDef
from gis_service.errors import GisError
from gis_service.store import FeatureQuery, GeoPackageStore, cql2, parse_datetime_interval

DAYS = ["2019-12-31", "2020-01-01", "2020-01-02", None]
# 2019-12-31T16:00:00Z is 2020-01-01 00:00 in Beijing; 03:59:59/04:00:00Z straddle 12:00 in Beijing.
INSTANTS = ["2019-12-31T16:00:00", "2020-01-01T00:00:00", "2020-01-01T03:59:59", "2020-01-01T04:00:00",
            "2020-01-01T12:00:00", "2020-01-02T00:00:00", None]
XS = [0.25, 0.5, 0.75, -0.5, 1.0]
N_ROWS = 84  # every pairing of DAYS and INSTANTS (4 × 7) three times


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """(layer, store, frame indexed by fid): an 84-point layer with every field type."""
    folder = tmp_path_factory.mktemp("cql2")
    layer = LayerDef(
        id="events", group="test", title_zh="事件", title_en="Events", geometry="Point", access="public",
        fields=(FieldDef("name", "string", "名称"), FieldDef("n", "integer", "序号"),
                FieldDef("x", "real", "数值"), FieldDef("flag", "boolean", "标记"), FieldDef("day", "date", "日期"),
                FieldDef("moment", "datetime", "时刻")),
        path=folder / "events.toml", time_field="moment")
    rows = [{"name": f"{'Ab' if i % 3 else 'aB'}-{i}", "n": i, "x": XS[i % len(XS)], "flag": i % 2 == 0,
             "day": DAYS[i % len(DAYS)], "moment": INSTANTS[i % len(INSTANTS)]} for i in range(N_ROWS)]
    points = [shapely.Point(116.0 + (i % 12) * 0.1, 39.0 + (i // 12) * 0.1) for i in range(N_ROWS)]
    store = GeoPackageStore()
    store.write(layer, gpd.GeoDataFrame(rows, geometry=points, crs="EPSG:4490"), origin="demo")
    frame = store.read_frame(layer)
    assert len(frame) == N_ROWS
    return layer, store, frame


def fids(events, text: str, lang: str = "cql2-text") -> list[int]:
    layer, store, _ = events
    return store.query(layer, FeatureQuery(cql=cql2.parse(text, lang), limit=10_000)).fids


def expected(events, mask) -> list[int]:
    frame = events[2]
    return sorted(frame.index[mask(frame).fillna(False).astype(bool)].tolist())


def utc(column: pd.Series) -> pd.Series:
    """Stored dates and date-times as UTC instants (a date is 00:00:00 UTC of its day)."""
    return pd.to_datetime(column).dt.tz_localize("UTC")


def ts(text: str) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# --- hostile filters ------------------------------------------------------------------------------------
HOSTILE = {
    "300 nested parentheses": ("(" * 300 + "n = 1" + ")" * 300, "cql2-text"),
    "400 NOTs": ("NOT " * 400 + "n = 1", "cql2-text"),
    "1 100 OR terms": (" OR ".join(f"n = {i}" for i in range(1100)), "cql2-text"),
    "20 000 nested parentheses": ("(" * 20_000 + "n = 1" + ")" * 20_000, "cql2-text"),
    "20 000 OR terms": (" OR ".join(f"n = {i}" for i in range(20_000)), "cql2-text"),
    "a run of signs": ("n = " + "-" * 5000 + "1", "cql2-text"),
    "5 000 nested NOTs in JSON": ('{"op":"not","args":[' * 5000 + '{"op":"=","args":[{"property":"n"},1]}'
                                  + "]}" * 5000, "cql2-json"),
    "1 100 OR terms in JSON": (json.dumps({"op": "or", "args": [{"op": "=", "args": [{"property": "n"}, i]}
                                                              for i in range(1100)]}), "cql2-json"),
    "deep JSON arrays": ("[" * 100_000 + "]" * 100_000, "cql2-json"),
    "over a million characters": ("n = 1 OR " * 120_000 + "n = 1", "cql2-text"),
    # Arithmetic chains: cql2-rs recurses per operator and crashed the process at about 10 000 terms.
    "10 000 additions": ("n = " + "+".join(["1"] * 10_000), "cql2-text"),
    "10 000 subtractions": ("n = 1" + " - 1" * 10_000, "cql2-text"),
    "10 000 multiplications": ("n = " + "*".join(["1"] * 10_000), "cql2-text"),
    "10 000 divs": ("n = 1" + " div 1" * 10_000, "cql2-text"),
    "5 spatial predicates": (" OR ".join(["S_INTERSECTS(geom, POINT(116 39))"] * 5), "cql2-text"),
    "5 spatial predicates in JSON": (json.dumps({"op": "or", "args": [
        {"op": "s_intersects", "args": [{"property": "geom"}, {"type": "Point", "coordinates": [116, 39]}]}] * 5}),
        "cql2-json"),
    "a JSON null": ("null", "cql2-json"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_filter_is_a_fast_400_not_a_crash(events, name):
    text, lang = HOSTILE[name]
    with pytest.raises(GisError) as err:
        fids(events, text, lang)
    assert err.value.status == 400 and err.value.code == "bad_filter"
    assert "filter 参数无效" in err.value.message_zh and "invalid filter" in err.value.message_en


def test_filters_just_inside_the_caps_still_work(events):
    nested = "(" * (cql2.MAX_NESTING - 1) + "n < 10" + ")" * (cql2.MAX_NESTING - 1)
    assert fids(events, nested) == expected(events, lambda f: f.n < 10)
    many = " OR ".join(f"n = {i}" for i in range(0, cql2.MAX_LOGICAL + 1, 3))  # 67 terms, 66 ORs
    assert fids(events, many) == expected(events, lambda f: f.n % 3 == 0)
    nots = "NOT " * 20 + "n < 10"
    assert fids(events, nots) == expected(events, lambda f: f.n < 10)


# --- dates and instants ---------------------------------------------------------------------------------
TEMPORAL = [
    ("day >= TIMESTAMP('2020-01-01T00:00:00Z')", lambda f: utc(f.day) >= ts("2020-01-01T00:00:00Z")),
    ("day > TIMESTAMP('2020-01-01T12:00:00Z')", lambda f: utc(f.day) > ts("2020-01-01T12:00:00Z")),
    ("day >= TIMESTAMP('2020-01-01T12:00:00Z')", lambda f: utc(f.day) >= ts("2020-01-01T12:00:00Z")),
    ("day <= TIMESTAMP('2020-01-01T12:00:00Z')", lambda f: utc(f.day) <= ts("2020-01-01T12:00:00Z")),
    ("day < TIMESTAMP('2020-01-01T00:00:00Z')", lambda f: utc(f.day) < ts("2020-01-01T00:00:00Z")),
    ("day = TIMESTAMP('2020-01-01T00:00:00Z')", lambda f: utc(f.day) == ts("2020-01-01T00:00:00Z")),
    ("day = TIMESTAMP('2020-01-01T12:00:00Z')", lambda f: utc(f.day) == ts("2020-01-01T12:00:00Z")),
    ("day <> TIMESTAMP('2020-01-01T12:00:00Z')", lambda f: f.day.notna()),
    ("day >= TIMESTAMP('2020-01-01T12:00:00+08:00')", lambda f: utc(f.day) >= ts("2020-01-01T12:00:00+08:00")),
    ("day >= TIMESTAMP('2020-01-01T08:00:00+08:00')", lambda f: utc(f.day) >= ts("2020-01-01T08:00:00+08:00")),
    ("day < TIMESTAMP('2020-01-01T07:59:59+08:00')", lambda f: utc(f.day) < ts("2020-01-01T07:59:59+08:00")),
    ("day = DATE('2020-01-01')", lambda f: f.day == "2020-01-01"),
    ("day > '2020-01-01'", lambda f: utc(f.day) > ts("2020-01-01")),
    ("moment >= DATE('2020-01-01')", lambda f: utc(f.moment) >= ts("2020-01-01")),
    ("moment < DATE('2020-01-01')", lambda f: utc(f.moment) < ts("2020-01-01")),
    ("moment = TIMESTAMP('2020-01-01T08:00:00+08:00')", lambda f: utc(f.moment) == ts("2020-01-01T08:00:00+08:00")),
    ("moment >= TIMESTAMP('2020-01-01T12:00:00+08:00')", lambda f: utc(f.moment) >= ts("2020-01-01T12:00:00+08:00")),
    ("moment < TIMESTAMP('2020-01-01T00:00:00+08:00')", lambda f: utc(f.moment) < ts("2020-01-01T00:00:00+08:00")),
    ("moment > TIMESTAMP('2020-01-01T03:59:59.5Z')", lambda f: utc(f.moment) > ts("2020-01-01T03:59:59.5Z")),
    ("moment <= TIMESTAMP('2020-01-01T03:59:59.5Z')", lambda f: utc(f.moment) <= ts("2020-01-01T03:59:59.5Z")),
    ("moment BETWEEN TIMESTAMP('2020-01-01T08:00:00+08:00') AND DATE('2020-01-02')",
     lambda f: (utc(f.moment) >= ts("2020-01-01T00:00:00Z")) & (utc(f.moment) <= ts("2020-01-02"))),
    ("day BETWEEN TIMESTAMP('2019-12-31T12:00:00Z') AND TIMESTAMP('2020-01-02T00:00:00+08:00')",
     lambda f: (utc(f.day) >= ts("2019-12-31T12:00:00Z")) & (utc(f.day) <= ts("2020-01-02T00:00:00+08:00"))),
    ("day IN (TIMESTAMP('2020-01-02T08:00:00+08:00'), TIMESTAMP('2019-12-31T08:00:00Z'))",
     lambda f: utc(f.day) == ts("2020-01-02T00:00:00Z")),
    ("moment IN (DATE('2020-01-01'), TIMESTAMP('2020-01-01T20:00:00+08:00'))",
     lambda f: utc(f.moment).isin([ts("2020-01-01"), ts("2020-01-01T12:00:00Z")])),
    ("day = moment", lambda f: utc(f.day) == utc(f.moment)),
    ("day < moment", lambda f: utc(f.day) < utc(f.moment)),
]


@pytest.mark.parametrize("text, mask", TEMPORAL, ids=[t for t, _ in TEMPORAL])
def test_dates_and_timestamps_compare_as_utc_instants(events, text, mask):
    want = expected(events, mask)
    assert fids(events, text) == want


def test_a_date_field_at_or_after_midnight_utc_includes_that_day(events):
    frame = events[2]
    got = fids(events, "day >= TIMESTAMP('2020-01-01T00:00:00Z')")
    assert set(frame.index[frame.day == "2020-01-01"]) <= set(got)
    later = fids(events, "day > TIMESTAMP('2020-01-01T12:00:00Z')")
    assert not set(frame.index[frame.day == "2020-01-01"]) & set(later)
    assert set(frame.index[frame.day == "2020-01-02"]) <= set(later)


@pytest.mark.parametrize("text", ["day = DATE('2020-02-30')", "moment > TIMESTAMP('2020-13-01T00:00:00Z')",
                                  "day = 'not a date'", "day = 20200101", "moment = TRUE", "n = DATE('2020-01-01')",
                                  "name > TIMESTAMP('2020-01-01T00:00:00Z')"])
def test_bad_or_mistyped_temporal_values_are_a_400(events, text):
    with pytest.raises(GisError) as err:
        fids(events, text)
    assert err.value.status == 400


@pytest.mark.parametrize("field, value", [
    ("moment", "2020-01-01T08:00:00+08:00"), ("moment", "2020-01-01T12:00:00+08:00/.."),
    ("moment", "../2020-01-01T07:59:59+08:00"), ("moment", "2020-01-01T00:00:00Z/2020-01-01T12:00:00+08:00"),
    ("moment", "2020-01-01"), ("day", "2020-01-01T08:00:00+08:00/.."), ("day", "2020-01-01T12:00:00+08:00/.."),
    ("day", "../2020-01-01T07:59:59+08:00"), ("day", "2020-01-01"), ("day", "2020-01-02T08:00:00+08:00"),
])
def test_datetime_parameter_converts_offsets_to_utc(events, field, value):
    layer, store, frame = events
    layer = dataclasses.replace(layer, time_field=field)
    page = store.query(layer, FeatureQuery(datetime=parse_datetime_interval(value, dict(
        day="date", moment="datetime")[field]), limit=10_000))
    instants = utc(frame[field])
    start, _, end = value.partition("/") if "/" in value else (value, "", value)
    mask = instants.notna()
    if start != "..":
        mask &= instants >= ts(start) if "/" in value else instants == ts(start)
    if end != ".." and "/" in value:
        mask &= instants <= ts(end)
    assert page.fids == sorted(frame.index[mask].tolist())


# --- what the old parser missed ----------------------------------------------------------------------
def test_six_number_bbox_is_the_box_of_its_xy_corners(events):
    frame = events[2]
    box = shapely.box(116.25, 39.15, 116.75, 39.45)
    got = fids(events, "S_INTERSECTS(geom, BBOX(116.25, 39.15, -10, 116.75, 39.45, 10))")
    want = sorted(frame.index[frame.intersects(box)].tolist())
    assert got == want and 0 < len(want) < len(frame)


@pytest.mark.parametrize("text, mask", [
    ("x = .5", lambda f: f.x == 0.5),
    ("x < -.25", lambda f: f.x < -0.25),
    ("x IN (.25, .75)", lambda f: f.x.isin([0.25, 0.75])),
    ("x BETWEEN .3 AND 1.", lambda f: f.x.between(0.3, 1.0)),
    ("S_WITHIN(geom, POLYGON((115.95 38.95, 116.55 38.95, 116.55 39.35, 115.95 39.35, 115.95 38.95)))",
     lambda f: f.within(shapely.box(115.95, 38.95, 116.55, 39.35))),
])
def test_numbers_written_with_a_leading_dot(events, text, mask):
    want = expected(events, mask)
    assert fids(events, text) == want and want


def test_a_dot_inside_a_string_or_a_name_is_left_alone():
    assert cql2.parse("name = 'a .5'") == {"op": "=", "args": [{"property": "name"}, "a .5"]}
    assert cql2.properties(cql2.parse("p.5 = 1")) == {"p.5"}


def test_not_of_a_conjunction(events):
    want = expected(events, lambda f: ~(f.flag & (f.n < 30)))
    assert fids(events, "NOT (flag = TRUE AND n < 30)") == want and 0 < len(want) < N_ROWS


@pytest.mark.parametrize("text, mask", [
    ("CASEI(name) = casei('AB-4')", lambda f: f.name.str.lower() == "ab-4"),
    ("CASEI(name) LIKE casei('AB-1%')", lambda f: f.name.str.lower().str.startswith("ab-1")),
    ("name LIKE 'Ab-1%'", lambda f: f.name.str.startswith("Ab-1")),
    ("name LIKE 'Ab\\_%'", lambda f: f.name.str.startswith("Ab_")),
    ("name NOT LIKE '%-_'", lambda f: f.name.str.len() - f.name.str.index("-") != 2),
])
def test_case_insensitive_and_like(events, text, mask):
    assert fids(events, text) == expected(events, mask)


# --- CQL2-JSON ------------------------------------------------------------------------------------------
def P(name):
    return {"property": name}


EQUIVALENT = [
    ("NOT (flag = TRUE AND n < 30)",
     {"op": "not", "args": [{"op": "and", "args": [{"op": "=", "args": [P("flag"), True]},
                                                   {"op": "<", "args": [P("n"), 30]}]}]}),
    ("day >= TIMESTAMP('2020-01-01T12:00:00+08:00') OR x IN (0.25, -0.5)",
     {"op": "or", "args": [{"op": ">=", "args": [P("day"), {"timestamp": "2020-01-01T12:00:00+08:00"}]},
                           {"op": "in", "args": [P("x"), [0.25, -0.5]]}]}),
    ("S_INTERSECTS(geom, BBOX(116.25, 39.15, 116.75, 39.45)) AND name LIKE 'aB%'",
     {"op": "and", "args": [{"op": "s_intersects", "args": [P("geom"), {"bbox": [116.25, 39.15, 116.75, 39.45]}]},
                            {"op": "like", "args": [P("name"), "aB%"]}]}),
    ("S_CONTAINS(POLYGON((116.05 39.05, 116.65 39.05, 116.65 39.55, 116.05 39.05)), geom) AND moment IS NULL",
     {"op": "and", "args": [{"op": "s_contains", "args": [
         {"type": "Polygon", "coordinates": [[[116.05, 39.05], [116.65, 39.05], [116.65, 39.55], [116.05, 39.05]]]},
         P("geom")]}, {"op": "isNull", "args": [P("moment")]}]}),
    ("n BETWEEN 10 AND 20 AND NOT day = DATE('2020-01-01')",
     {"op": "and", "args": [{"op": "between", "args": [P("n"), 10, 20]},
                            {"op": "not", "args": [{"op": "=", "args": [P("day"), {"date": "2020-01-01"}]}]}]}),
]
ORACLE = [
    lambda f: ~(f.flag & (f.n < 30)),
    lambda f: (utc(f.day) >= ts("2020-01-01T04:00:00Z")) | f.x.isin([0.25, -0.5]),
    lambda f: f.intersects(shapely.box(116.25, 39.15, 116.75, 39.45)) & f.name.str.startswith("aB"),
    lambda f: f.within(shapely.Polygon([(116.05, 39.05), (116.65, 39.05), (116.65, 39.55)])) & f.moment.isna(),
    lambda f: f.n.between(10, 20) & f.day.notna() & (f.day != "2020-01-01"),
]


@pytest.mark.parametrize("i", range(len(EQUIVALENT)))
def test_cql2_json_selects_what_the_text_selects(events, i):
    text, tree = EQUIVALENT[i]
    want = expected(events, ORACLE[i])
    assert fids(events, text) == want
    assert fids(events, json.dumps(tree), "cql2-json") == want
    assert 0 < len(want) < N_ROWS


# --- names, types, what is not supported ---------------------------------------------------------------
def test_properties_lists_every_name_a_filter_reaches():
    tree = cql2.parse("CASEI(a) = casei('x') AND b IN (1, 2) AND NOT (c BETWEEN 1 AND 2 OR d IS NULL) "
                      "AND S_INTERSECTS(geom, POINT(1 2)) AND e = f")
    assert cql2.properties(tree) == {"a", "b", "c", "d", "geom", "e", "f"}
    json_tree = cql2.parse(json.dumps({"op": "like", "args": [{"op": "casei", "args": [P("g")]}, "x%"]}), "cql2-json")
    assert cql2.properties(json_tree) == {"g"}


@pytest.mark.parametrize("text, code", [
    ("nosuch = 1", "unknown_property"), ("name = 3", "bad_filter"), ("flag = 1", "bad_filter"),
    ("n IN (1, 'x')", "bad_filter"), ("n = name", "bad_filter"), ("CASEI(n) = casei('1')", "bad_filter"),
    ("ACCENTI(name) = accenti('a')", "bad_filter"),
    ("T_BEFORE(moment, TIMESTAMP('2020-01-01T00:00:00Z'))", "bad_filter"),
    ("n + 1 = 2", "bad_filter"), ("name = NULL", "bad_filter"), ("S_INTERSECTS(name, POINT(1 2))", "bad_filter"),
    ("S_INTERSECTS(geom, BBOX(2, 2, 1, 1))", "bad_filter"), ("S_INTERSECTS(geom, POLYGON((1 2)))", "bad_filter"),
    ("x LIKE '1%'", "bad_filter"), ("n = ", "bad_filter"),
])
def test_wrong_filters_are_a_400(events, text, code):
    with pytest.raises(GisError) as err:
        fids(events, text)
    assert err.value.status == 400 and err.value.code == code


@pytest.mark.parametrize("text", ["{", '{"op": "=", "args": [{"property": "n"}]}', '{"op": "and", "args": []}',
                                  '"n = 1"', '{"op": "=", "args": [{"property": 5}, 1]}'])
def test_malformed_cql2_json_is_a_400(events, text):
    with pytest.raises(GisError) as err:
        fids(events, text, "cql2-json")
    assert err.value.status == 400


def test_unknown_filter_lang_is_a_400():
    with pytest.raises(GisError) as err:
        cql2.parse("n = 1", "ecql")
    assert err.value.status == 400 and "filter-lang" in err.value.message_en


def test_a_literal_on_the_left_of_in_is_converted_for_the_field(events):
    """DATE(…) IN (day) selects what day = DATE(…) selects."""
    day = events[2]["day"].dropna().iloc[0]
    assert fids(events, f"DATE('{day}') IN (day)") == fids(events, f"day = DATE('{day}')") != []


def test_spatial_filters_share_a_budget_of_exact_tests(events):
    layer, _, frame = events
    store = GeoPackageStore()
    store.spatial_candidate_budget = len(frame) + 10  # one predicate over every point fits, two do not
    everything = "S_INTERSECTS(geom, BBOX(115, 38, 118, 41))"
    assert len(store.query(layer, FeatureQuery(cql=cql2.parse(everything), limit=1000)).fids) == len(frame)
    with pytest.raises(GisError) as err:
        store.query(layer, FeatureQuery(cql=cql2.parse(f"{everything} OR {everything}")))
    assert err.value.status == 400 and err.value.code == "filter_too_broad"
