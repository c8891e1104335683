"""Grading per Appendix 1 (L1531–L1603): every threshold at the number, one below and one above, generated from
the rule table, plus cases written by hand from the seed text so that a wrong table cannot pass its own tests."""

from __future__ import annotations

import re

import pytest

from gis_service.config import REPO_ROOT
from gis_service.environment.grading import GRADES, Grader
from gis_service.errors import GisError
from gis_service.rules import RuleBook

RULES = RuleBook.load().domain("environment")
GRADER = Grader(RULES)


def grade_of(**facts) -> str:
    return GRADER.grade(GRADER.parse(facts)).grade


def _numeric_cases():
    for c in GRADER.criteria:
        if c.any_of:
            continue
        lo, hi = c.min, c.below
        yield pytest.param(c, lo, True, id=f"{c.rule.id}-at-min-{lo:g}")
        if lo - 1 >= 0:
            yield pytest.param(c, lo - 1, False, id=f"{c.rule.id}-below-min-{lo - 1:g}")
        yield pytest.param(c, lo + 1, hi is None or lo + 1 < hi, id=f"{c.rule.id}-above-min-{lo + 1:g}")
        if hi is not None:
            yield pytest.param(c, hi, False, id=f"{c.rule.id}-at-below-{hi:g}")
            yield pytest.param(c, hi - 1, True, id=f"{c.rule.id}-one-under-below-{hi - 1:g}")


@pytest.mark.parametrize("criterion, value, fires", list(_numeric_cases()))
def test_every_numeric_threshold_at_below_and_above(criterion, value, fires):
    facts = GRADER.parse({criterion.criterion: value})
    result = GRADER.grade(facts)
    fired = {t["rule_id"] for t in result.triggered}
    assert (criterion.rule.id in fired) is fires
    if fires:
        assert GRADES.index(result.grade) <= GRADES.index(criterion.grade)


@pytest.mark.parametrize("criterion", [c for c in GRADER.criteria if c.any_of], ids=lambda c: c.rule.id)
def test_every_enumerated_criterion_fires_on_its_values_only(criterion):
    flags = {f: True for f in criterion.requires}
    for value in criterion.any_of:
        facts = GRADER.parse({criterion.criterion: value, **flags})
        assert criterion.rule.id in {t["rule_id"] for t in GRADER.grade(facts).triggered}
    for flag in criterion.requires:  # without a required flag it does not fire
        facts = GRADER.parse({criterion.criterion: criterion.any_of[0]})
        assert criterion.rule.id not in {t["rule_id"] for t in GRADER.grade(facts).triggered}, flag
    for flag in criterion.excludes:
        facts = GRADER.parse({criterion.criterion: criterion.any_of[0], flag: True})
        assert criterion.rule.id not in {t["rule_id"] for t in GRADER.grade(facts).triggered}


# --- by hand, from the seed text (附件1) ---------------------------------------------------------------------
@pytest.mark.parametrize("facts, grade", [
    ({"deaths": 30}, "特别重大"), ({"deaths": 29}, "重大"), ({"deaths": 10}, "重大"), ({"deaths": 9}, "较大"),
    ({"deaths": 3}, "较大"), ({"deaths": 2}, "一般"), ({"deaths": 0}, "一般"),
    ({"poisoned_or_injured": 100}, "特别重大"), ({"poisoned_or_injured": 99}, "重大"),
    ({"poisoned_or_injured": 50}, "重大"), ({"poisoned_or_injured": 49}, "较大"), ({"poisoned_or_injured": 10}, "较大"),
    ({"poisoned_or_injured": 9}, "一般"),
    ({"evacuated": 50000}, "特别重大"), ({"evacuated": 49999}, "重大"), ({"evacuated": 10000}, "重大"),
    ({"evacuated": 9999}, "较大"), ({"evacuated": 5000}, "较大"), ({"evacuated": 4999}, "一般"),
    ({"direct_loss_cny": 100_000_000}, "特别重大"), ({"direct_loss_cny": 99_999_999.99}, "重大"),
    ({"direct_loss_cny": 20_000_000}, "重大"), ({"direct_loss_cny": 19_999_999}, "较大"),
    ({"direct_loss_cny": 5_000_000}, "较大"), ({"direct_loss_cny": 4_999_999}, "一般"),
    ({"water_source_interrupted": "city"}, "特别重大"), ({"water_source_interrupted": "county"}, "重大"),
    ({"water_source_interrupted": "township"}, "较大"),
    ({"cross_boundary": "province"}, "重大"), ({"cross_boundary": "city"}, "较大"), ({"cross_boundary": "county"}, "一般"),
    ({"ecological": "function_lost"}, "特别重大"), ({"ecological": "function_partly_lost"}, "重大"),
    ({"ecological": "protected_species_damaged"}, "较大"),
    ({"radioactive_source": "I", "large_scale_pollution": True}, "特别重大"),
    ({"radioactive_source": "II", "out_of_control": True, "large_scale_pollution": True}, "特别重大"),
    ({"radioactive_source": "II"}, "重大"), ({"radioactive_source": "III"}, "较大"), ({"radioactive_source": "V"}, "一般"),
    ({"acute_radiation_deaths": 3}, "特别重大"), ({"acute_radiation_deaths": 2}, "重大"),
    ({"acute_radiation_sickness": 10}, "重大"), ({"acute_radiation_sickness": 9}, "较大"),
    ({"radioactive_leak": "large"}, "特别重大"), ({"radioactive_leak": "fairly_large"}, "重大"),
    ({"radioactive_leak": "small"}, "较大"), ({"radioactive_leak": "on_site"}, "一般"),
])
def test_grade_by_hand_from_the_seed(facts, grade):
    assert grade_of(**facts) == grade


def test_the_most_severe_criterion_wins_and_all_fired_are_listed():
    result = GRADER.grade(GRADER.parse({"deaths": 4, "evacuated": 12000, "direct_loss_cny": 1000}))
    assert result.grade == "重大" and result.level == "II"
    assert [t["criterion"] for t in result.triggered] == ["evacuated", "deaths", "direct_loss_cny"]
    assert all("L1603" in t["clause"] or "行" in t["clause"] for t in result.triggered)


def test_facts_below_every_threshold_give_一般_by_the_catch_all():
    result = GRADER.grade(GRADER.parse({"deaths": 0, "evacuated": 0}))
    assert result.grade == "一般" and result.catch_all and result.level == "IV"
    assert "L1601" in result.triggered[0]["clause"]


def test_response_level_lead_and_groups():
    big = GRADER.grade(GRADER.parse({"deaths": 3}))
    assert big.level == "III" and big.response["lead"].startswith("市指挥部")
    assert [g["name"] for g in big.response["groups"]][:2] == ["污染处置组", "应急监测组"]
    assert len(big.response["groups"]) == 6
    assert next(g for g in big.response["groups"] if g["name"] == "医学救援组")["lead"] == "市卫生健康委"
    small = GRADER.grade(GRADER.parse({"deaths": 1}))
    assert small.level == "IV" and "县" in small.response["lead"]


def test_sensitive_area_or_period_raises_the_level_by_one_not_the_grade():
    result = GRADER.grade(GRADER.parse({"deaths": 1, "sensitive_area_or_period": True}))
    assert (result.grade, result.base_level, result.level, result.escalated) == ("一般", "IV", "III", True)
    assert result.response["lead"].startswith("市指挥部") and "L1390" not in result.response["lead"]
    top = GRADER.grade(GRADER.parse({"deaths": 40, "sensitive_area_or_period": True}))
    assert top.level == "I" and not top.escalated


def test_report_to_province_from_较大_or_the_other_conditions():
    assert GRADER.grade(GRADER.parse({"deaths": 3})).report_to_province
    assert not GRADER.grade(GRADER.parse({"deaths": 2})).report_to_province
    flagged = GRADER.grade(GRADER.parse({"deaths": 1, "foreign_cause": True}))
    assert flagged.report_to_province and "境外" in flagged.province_report_reasons[0]


@pytest.mark.parametrize("body, field", [
    ({"deaths": -1}, "deaths"), ({"deaths": 2.5}, "deaths"), ({"evacuated": "many"}, "evacuated"),
    ({"deaths": True}, "deaths"), ({"direct_loss_cny": -5}, "direct_loss_cny"),
    ({"water_source_interrupted": "village"}, "water_source_interrupted"), ({"cross_boundary": "country"}, "cross_boundary"),
    ({"radioactive_source": "VI"}, "radioactive_source"), ({"sensitive_area_or_period": "yes"}, "sensitive_area_or_period"),
    ({"wind": 3}, "wind"),
])
def test_impossible_values_are_422_naming_the_field(body, field):
    with pytest.raises(GisError) as info:
        GRADER.parse(body)
    assert info.value.status == 422 and field in info.value.message


def test_an_empty_object_is_422():
    with pytest.raises(GisError) as info:
        GRADER.parse({})
    assert info.value.status == 422 and info.value.code == "no_facts"


SEED = REPO_ROOT.parent / "shared" / "seed" / "000_4da6c342ff6bc6a0.txt"


@pytest.mark.parametrize("criterion", GRADER.criteria, ids=lambda c: c.rule.id)
def test_every_grade_rule_quotes_its_seed_line(criterion):
    """The text quoted in each rule's clause stands on the seed line it cites (a wrong line or a misquoted
    threshold fails here, whatever the evaluator does)."""
    lines = SEED.read_text(encoding="utf-8").splitlines()
    quote = re.search("“(.*?)”", criterion.rule.clause).group(1)
    quote = re.sub("（[^）]*）$", "", quote)  # a trailing note of ours, e.g. （0人不构成本项…）
    assert 1531 <= criterion.rule.line <= 1603
    assert quote in lines[criterion.rule.line - 1]


@pytest.mark.parametrize("body, field", [
    ({"deaths": 10**30}, "deaths"), ({"evacuated": 1e20}, "evacuated"), ({"direct_loss_cny": 10**30}, "direct_loss_cny"),
    ({"acute_radiation_sickness": 2**64}, "acute_radiation_sickness"),
])
def test_absurdly_large_facts_are_422_naming_the_field(body, field):
    """A number no answer can carry (beyond 64-bit integers) was a 500 when the answer was serialised."""
    with pytest.raises(GisError) as info:
        GRADER.parse(body)
    assert info.value.status == 422 and field in info.value.message and "fact_limits" in info.value.message


def test_the_largest_fact_allowed_is_still_graded():
    limits = RULES.value("fact_limits")
    assert limits["count"] > 8_000_000_000 and limits["direct_loss_cny"] >= 100_000_000  # above every threshold
    assert grade_of(evacuated=limits["count"], direct_loss_cny=limits["direct_loss_cny"]) == "特别重大"
