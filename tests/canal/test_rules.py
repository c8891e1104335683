"""The canal rule file: boundary cases generated from the TOML (so an override or edit is tested as it stands),
plus cases written by hand from the seed text, so that a wrong table cannot pass its own tests."""

import math

import geopandas as gpd
import pytest
import shapely

from gis_service.canal import analysis
from gis_service.canal.analysis import PreparedZones
from gis_service.canal.service import check_rules, siting_rules, zone_specs
from gis_service.config import REPO_ROOT
from gis_service.errors import RuleFileError
from gis_service.rules import RuleBook

RULES = RuleBook.load().domain("canal")
METRIC = "EPSG:4548"
X0, Y0 = 500_000.0, 4_350_000.0
SEED = REPO_ROOT.parent / "shared" / "seed" / "000_4da6c342ff6bc6a0.txt"
STEP = 0.5  # metres beyond a limit


def _frame(rows, geoms):
    return gpd.GeoDataFrame(rows, geometry=list(geoms), crs=METRIC)


def _channel(river="北运河", length=10_000):
    return _frame([{"name": river}], [shapely.LineString([(X0, Y0), (X0 + length, Y0)])])


def _world():
    """Each river in scope as a straight 10 km channel flowing east, 30 km apart, inside one city."""
    rivers = list(RULES.value("canal_rivers"))
    channels = _frame([{"name": r} for r in rivers],
                      [shapely.LineString([(X0, Y0 + i * 30_000), (X0 + 10_000, Y0 + i * 30_000)]) for i in range(len(rivers))])
    city = _frame([{"name": "市"}], [shapely.box(X0 - 10_000, Y0 - 10_000, X0 + 20_000, Y0 + 30_000 * len(rivers))])
    base = analysis.baselines(channels, rivers)
    zs = analysis.zones(base, zone_specs(RULES), city, city)
    return PreparedZones.build(zs.frame, base)


PREPARED = _world()
NO_HERITAGE = _frame([], [])


# --- generated from the TOML ------------------------------------------------------------------------------
def test_village_at_the_remediation_distance_is_in_and_just_beyond_is_out():
    d = RULES.value("village_remediation_distance_m")
    v = _frame([{"name": "at", "code": "1"}, {"name": "beyond", "code": "2"}],
               [shapely.Point(X0 + 5_000, Y0 + d), shapely.Point(X0 + 5_000, Y0 - d - STEP)])
    rows = analysis.villages_within(analysis.baselines(_channel(), ["北运河"]), v, d)
    assert rows["name"].tolist() == ["at"]


@pytest.mark.parametrize("delta, short", [(0.0, False), (-STEP, True), (STEP, False)])
def test_corridor_width_at_the_minimum_complies_and_just_under_does_not(delta, short):
    w = RULES.value("green_corridor_min_width_m")
    corridors = _frame([{"river": "大清河", "bank": "left"}], [shapely.box(X0, Y0 + 20, X0 + 1_000, Y0 + 20 + w + delta)])
    counties = _frame([{"name": "县"}], [shapely.box(X0 - 5_000, Y0 - 5_000, X0 + 5_000, Y0 + 5_000)])
    base = analysis.baselines(_channel("大清河", 1_000), ["大清河"])
    stations = analysis.corridor_widths(base, corridors, counties, RULES.value("green_belt_station_spacing_m"),
                                        RULES.value("green_belt_probe_length_m"), w)
    sections = analysis.shortfalls(stations, base, w).sections
    assert (len(sections[sections["bank"] == "left"]) > 0) is short


HERITAGE_CASES = [(cls, r[key] + delta, expected)
                  for cls, r in RULES.value("heritage_ranges").items()
                  for key, delta, expected in (
                      ("protection_m", 0.0, "protection"),
                      ("protection_m", STEP, "construction_control" if r["construction_control_m"] >= r["protection_m"] + STEP else None),
                      ("construction_control_m", 0.0, "construction_control" if r["construction_control_m"] > r["protection_m"] else "protection"),
                      ("construction_control_m", STEP, None))]


@pytest.mark.parametrize("cls, distance, expected", HERITAGE_CASES)
def test_heritage_ranges_include_their_radius(cls, distance, expected):
    site = (X0 + 5_000, Y0 + 20_000)  # far from every zone
    heritage = _frame([{"name": "遗产", "heritage_class": cls}], [shapely.Point(site)])
    v = analysis.check_siting(shapely.Point(site[0] + distance, site[1]), PREPARED, heritage, siting_rules(RULES), None)
    assert [h["range"] for h in v.heritage] == ([expected] if expected else [])
    if expected:
        key = "heritage_protection" if expected == "protection" else "heritage_construction_control"
        assert v.verdict == RULES.value("siting_verdicts")[key]


@pytest.mark.parametrize("entry", RULES.value("negative_list"), ids=lambda e: e["sector"])
def test_each_negative_list_sector_in_the_core_zone_gets_its_action(entry):
    core = RULES.value("core_monitoring_zone_width_m")
    inside = shapely.Point(X0 + 5_000, Y0 - core + STEP)
    v = analysis.check_siting(inside, PREPARED, NO_HERITAGE, siting_rules(RULES), entry)
    assert v.verdict == max(entry["action"], RULES.value("siting_verdicts")["core_monitoring_sector_not_listed"],
                            key=analysis.VERDICT_RANK.__getitem__)
    assert v.negative_list[0]["sector"] == entry["sector"] and entry["source"] in v.negative_list[0]["clause"]
    outside = analysis.check_siting(shapely.Point(X0 + 5_000, Y0 - core - STEP), PREPARED, NO_HERITAGE,
                                    siting_rules(RULES), entry)
    assert outside.negative_list == [] and outside.verdict == RULES.value("siting_verdicts")["outside_every_zone"]


@pytest.mark.parametrize("kind, rule_id, verdict_key", [
    ("village_remediation", "village_remediation_distance_m", "village_remediation"),
    ("green_belt", "green_corridor_min_width_m", "green_belt"),
    ("core_monitoring", "core_monitoring_zone_width_m", "core_monitoring_sector_unknown")])
def test_each_zone_edge_is_inside_and_just_beyond_is_not(kind, rule_id, verdict_key):
    w = RULES.value(rule_id)
    at = analysis.check_siting(shapely.Point(X0 + 5_000, Y0 + w), PREPARED, NO_HERITAGE, siting_rules(RULES), None)
    assert kind in {z["kind"] for z in at.zones}
    assert any(r["rule_id"] == f"canal.{rule_id}" and r["verdict"] == RULES.value("siting_verdicts")[verdict_key]
               for r in at.reasons)
    beyond = analysis.check_siting(shapely.Point(X0 + 5_000, Y0 + w + STEP), PREPARED, NO_HERITAGE,
                                   siting_rules(RULES), None)
    assert kind not in {z["kind"] for z in beyond.zones}


def test_the_rule_file_holds_together_and_a_broken_table_stops_start_up():
    check_rules(RULES)

    class Broken:
        def __init__(self, rule_id, value):
            self.rule_id, self._value = rule_id, value

        def value(self, rule_id):
            return self._value if rule_id == self.rule_id else RULES.value(rule_id)

        def rule(self, rule_id):
            return RULES.rule(rule_id)

    with pytest.raises(RuleFileError, match="heritage_ranges"):
        check_rules(Broken("heritage_ranges", {"其他": {"protection_m": 300, "construction_control_m": 100}}))
    with pytest.raises(RuleFileError, match="measurement_baseline"):
        check_rules(Broken("measurement_baseline", "bank_top"))
    with pytest.raises(RuleFileError, match="siting_verdicts"):
        check_rules(Broken("siting_verdicts", {**RULES.value("siting_verdicts"), "green_belt": "maybe"}))
    control = {k: v for k, v in RULES.value("siting_verdicts")["control_zones"].items() if k != "other"}
    with pytest.raises(RuleFileError, match="control_zones"):  # every kind a planner may draw needs a verdict
        check_rules(Broken("siting_verdicts", {**RULES.value("siting_verdicts"), "control_zones": control}))


@pytest.mark.parametrize("override, half_width, key", [
    ("green_belt_probe_length_m = 240", 150.0, "canal.green_belt_probe_length_m"),  # 240 ≤ 100 + 150
    ("green_corridor_min_width_m = 500", 0.0, "canal.green_corridor_min_width_m"),  # probe 500 ≤ 500
    ("village_remediation_distance_m = 6000", 0.0, "canal.village_remediation_distance_m"),  # > 5000
    ("villages_within_max_m = 900", 0.0, "canal.villages_within_max_m"),  # < 1000
])
def test_an_override_breaking_a_cross_rule_condition_stops_start_up_naming_file_and_key(tmp_path, override,
                                                                                          half_width, key):
    local = tmp_path / "rules.local.toml"
    local.write_text(f"[canal]\n{override}\n", encoding="utf-8")
    rules = RuleBook.load(override_path=local).domain("canal")
    with pytest.raises(RuleFileError) as err:
        check_rules(rules, half_width)
    assert err.value.path == local and err.value.key == key


def test_the_probe_must_reach_past_the_management_boundary_and_the_minimum_width():
    probe, width = RULES.value("green_belt_probe_length_m"), RULES.value("green_corridor_min_width_m")
    check_rules(RULES, probe - width - STEP)  # just enough
    with pytest.raises(RuleFileError, match="green_belt_probe_length_m"):
        check_rules(RULES, probe - width)


def test_negative_list_sources_are_spelled_out():
    assert all("同上" not in e["source"] for e in RULES.value("negative_list"))


def test_the_rule_file_states_the_project_boundary_convention():
    # style.md and requirements.md L1603: “'以上'含本数，'以下'不含本数”
    header = (REPO_ROOT / "gis_service" / "rules" / "canal.toml").read_text(encoding="utf-8").split("[[rule]]")[0]
    assert "“以下”不包括本数" in header and "“以上”“以内”包括本数" in header
    assert "“以上”“以下”“以内”包括本数" not in header


def test_remediation_and_corridor_units_and_deadlines_match_the_task_table():
    tasks = RULES.value("plan_tasks")
    assert RULES.value("village_remediation_units") == tasks["8"]["units"]
    assert RULES.value("village_remediation_deadline") == tasks["8"]["deadline"]
    assert RULES.value("green_corridor_units") == tasks["10"]["units"]
    assert RULES.value("green_corridor_deadline") == tasks["10"]["deadline"]
    assert len(tasks) == 17


# --- written by hand from the seed text -------------------------------------------------------------------
def test_values_written_from_the_seed():
    # L2143 “实施河道两侧1000米范围内村庄农村环境综合整治工程”; L2147 “各建设宽100米以上的绿色廊道景观带”, 2021年;
    # L2143 完成时限：2023年; 赵王新河 is not named at L2147.
    assert RULES.value("village_remediation_distance_m") == 1000
    assert RULES.value("green_corridor_min_width_m") == 100
    assert RULES.value("village_remediation_deadline") == "2023年"
    assert RULES.value("green_corridor_deadline") == "2021年"
    assert set(RULES.value("green_corridor_rivers")) == {"北运河", "大清河"}
    assert RULES.rule("core_monitoring_zone_width_m").basis == "setting"  # the seed gives no width
    assert RULES.rule("negative_list").basis == "setting" and all(
        e["basis"] == "setting" for e in RULES.value("negative_list"))  # the seed gives no list


@pytest.mark.skipif(not SEED.exists(), reason="the seed text is not beside the repository")
def test_every_stated_rule_is_found_on_its_seed_line():
    lines = SEED.read_text(encoding="utf-8").splitlines()
    for rule in RULES:
        if rule.basis != "stated":
            continue
        text = lines[rule.line - 1]
        value = rule.value
        if rule.id == "plan_tasks":
            for task in value.values():
                line = lines[task["line"] - 1]
                assert task["deadline"].rstrip("年") in line and all(u in line for u in task["units"]), task
            continue
        wanted = ([f"{value}米"] if isinstance(value, (int, float)) else
                  [value] if isinstance(value, str) else value)
        missing = [w for w in wanted if w not in text]
        assert not missing, (rule.key, missing)


def test_mu_is_a_fifteenth_of_a_hectare():
    assert math.isclose(analysis.M2_PER_MU, 10_000 / 15)
