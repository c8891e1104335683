"""Incident grading per Appendix 1 of the environmental emergency plan (廊政办字〔2021〕25号, L1531–L1603), the
response level and lead body (L1388), escalation for sensitive areas or periods (L1390), the working groups
(L1288–L1321) and the conditions for an immediate report to the province (L1372–L1382).

Every threshold is a rule in gis_service/rules/environment.toml (ids ``grade_*``); this module only evaluates
them. "以上" includes the number and "以下" excludes it (L1603): a criterion fires when ``min <= value < below``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import GisError, shown
from ..rules import DomainRules, Rule

GRADES = ("特别重大", "重大", "较大", "一般")  # most severe first
LEVELS = ("I", "II", "III", "IV")
CATCH_ALL_CLAUSE = "附件1 四.6：“对环境造成一定影响，尚未达到较大突发环境事件级别的”（L1601）"

# The facts POST /api/environment/grade accepts, by kind (the allowed enum values come from the rule file).
COUNTS = ("deaths", "poisoned_or_injured", "evacuated", "acute_radiation_deaths", "acute_radiation_sickness")
AMOUNTS = ("direct_loss_cny",)
ENUMS = ("water_source_interrupted", "cross_boundary", "ecological", "radioactive_source", "radioactive_leak")
FLAGS = ("out_of_control", "large_scale_pollution", "over_annual_dose_limit", "sensitive_area_or_period",
         "mass_incident", "international_impact", "foreign_cause", "deemed_necessary")
FACT_NAMES_ZH = {
    "deaths": "死亡人数", "poisoned_or_injured": "中毒或重伤人数", "evacuated": "疏散、转移人数",
    "direct_loss_cny": "直接经济损失（元）", "water_source_interrupted": "取水中断的集中式饮用水水源地级别",
    "cross_boundary": "跨行政区域影响", "ecological": "生态影响", "radioactive_source": "丢失、被盗或失控的放射源类别",
    "radioactive_leak": "放射性物质泄漏范围", "acute_radiation_deaths": "急性放射死亡人数",
    "acute_radiation_sickness": "急性重度放射病、局部器官残疾人数", "out_of_control": "放射源失控（而非丢失、被盗）",
    "large_scale_pollution": "造成大范围严重辐射污染", "over_annual_dose_limit": "人员受到超过年剂量限值的照射",
    "sensitive_area_or_period": "发生在易造成重大影响的地区或重要时段", "mass_incident": "可能或已引发大规模群体性事件",
    "international_impact": "可能造成国际影响", "foreign_cause": "境外因素导致", "deemed_necessary": "认为有必要向省政府报告",
}


def invalid(name: str, problem_zh: str, problem_en: str) -> GisError:
    return GisError("invalid_fact", f"字段 {name}（{FACT_NAMES_ZH.get(name, name)}）无效：{problem_zh}",
                    f"field '{name}' is invalid: {problem_en}", 422)


@dataclass(frozen=True)
class Criterion:
    rule: Rule
    criterion: str
    grade: str
    min: float | None = None
    below: float | None = None
    any_of: tuple = ()
    requires: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    def fires(self, facts: dict) -> bool:
        value = facts.get(self.criterion)
        if value is None:
            return False
        if self.any_of:
            if value not in self.any_of:
                return False
        else:
            if self.min is not None and value < self.min:
                return False
            if self.below is not None and value >= self.below:
                return False
        return all(facts.get(f) is True for f in self.requires) and not any(facts.get(f) is True for f in self.excludes)

    def threshold(self) -> str:
        if self.any_of:
            text = "属于 " + "、".join(str(v) for v in self.any_of)
        else:
            parts = ([f"≥ {self.min:g}"] if self.min is not None else []) + \
                    ([f"< {self.below:g}"] if self.below is not None else [])
            text = " 且 ".join(parts)
        text += "".join(f"，且 {f} 为真" for f in self.requires) + "".join(f"，且 {f} 不为真" for f in self.excludes)
        return text


@dataclass
class Grading:
    grade: str
    level: str
    base_level: str
    escalated: bool
    triggered: list[dict]
    response: dict
    report_to_province: bool
    province_report_reasons: list[str] = field(default_factory=list)
    catch_all: bool = False

    def as_dict(self) -> dict:
        return {"grade": self.grade, "level": self.level, "base_level": self.base_level, "escalated": self.escalated,
                "triggered": self.triggered, "catch_all": self.catch_all, "response": self.response,
                "report_to_province": self.report_to_province,
                "province_report_reasons": self.province_report_reasons}


class Grader:
    """Appendix 1 and the response rules, compiled once from the domain's rules."""

    def __init__(self, rules: DomainRules):
        self.rules = rules
        self.criteria: list[Criterion] = []
        for rule in rules:
            if not rule.id.startswith("grade_"):
                continue
            v = rule.value
            self.criteria.append(Criterion(rule, v["criterion"], v["grade"], v.get("min"), v.get("below"),
                                           tuple(v.get("any_of", ())), tuple(v.get("requires", ())),
                                           tuple(v.get("excludes", ()))))
        self.criteria.sort(key=lambda c: GRADES.index(c.grade))
        self.enum_values = {name: sorted({str(x) for c in self.criteria if c.criterion == name for x in c.any_of})
                            for name in ENUMS}
        self.enum_values["radioactive_source"] = ["I", "II", "III", "IV", "V"]

    # facts -----------------------------------------------------------------------------------------------
    def parse(self, body) -> dict:
        """Validated facts (422 naming the field otherwise); facts not given are absent."""
        if not isinstance(body, dict):
            raise GisError("invalid_facts", "请求体须为 JSON 对象", "the body must be a JSON object", 422)
        facts = {}
        limits = self.rules.value("fact_limits")
        for name, value in body.items():
            if value is None:
                continue
            if name in COUNTS:
                facts[name] = _at_most(name, _count(name, value), limits["count"])
            elif name in AMOUNTS:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    raise invalid(name, f"须为非负有限数，收到 {shown(value)}", f"must be a finite number ≥ 0, got {shown(value)}")
                facts[name] = _at_most(name, value, limits[name])
            elif name in ENUMS:
                allowed = self.enum_values[name]
                if not isinstance(value, str) or value not in allowed:
                    raise invalid(name, f"须为 {'|'.join(allowed)} 之一，收到 {shown(value)}",
                                  f"must be one of {'|'.join(allowed)}, got {shown(value)}")
                facts[name] = value
            elif name in FLAGS:
                if not isinstance(value, bool):
                    raise invalid(name, f"须为 true 或 false，收到 {shown(value)}", f"must be true or false, got {shown(value)}")
                facts[name] = value
            else:
                raise invalid(name, "未知字段", "unknown field")
        if not facts:
            raise GisError("no_facts", "至少给出一项事实（死亡、中毒、疏散人数、损失、水源、跨界等）",
                           "give at least one fact (deaths, poisoned, evacuated, loss, water source, cross-boundary …)", 422)
        return facts

    # grading ---------------------------------------------------------------------------------------------
    def grade(self, facts: dict) -> Grading:
        triggered = [{"criterion": c.criterion, "value": facts[c.criterion], "threshold": c.threshold(),
                      "grade": c.grade, "rule_id": c.rule.id, "clause": c.rule.citation()}
                     for c in self.criteria if c.fires(facts)]
        grade = triggered[0]["grade"] if triggered else GRADES[-1]  # criteria are sorted most severe first
        catch_all = not triggered
        if catch_all:
            triggered.append({"criterion": "catch_all", "value": None, "threshold": "未达到较大级别的任何标准",
                              "grade": GRADES[-1], "rule_id": None, "clause": CATCH_ALL_CLAUSE})
        levels = self.rules.value("response_levels")
        base = LEVELS.index(levels[grade]["level"])
        raise_by = int(self.rules.value("escalation_levels")) if facts.get("sensitive_area_or_period") else 0
        level = LEVELS[max(0, base - raise_by)]
        lead_grade = next(g for g in GRADES if levels[g]["level"] == level)
        reasons = []
        lowest = GRADES.index(self.rules.value("province_report_min_grade"))
        if GRADES.index(grade) <= lowest:
            reasons.append(f"初判为{self.rules.value('province_report_min_grade')}以上突发环境事件（"
                           f"{self.rules.rule('province_report_min_grade').citation()}）")
        for flag, text in self.rules.value("province_report_conditions").items():
            if facts.get(flag) is True:
                reasons.append(text)
        return Grading(grade=grade, level=level, base_level=LEVELS[base], escalated=level != LEVELS[base],
                       triggered=triggered, response=self.response(level, lead_grade, level != LEVELS[base]),
                       report_to_province=bool(reasons), province_report_reasons=reasons, catch_all=catch_all)

    def response(self, level: str, lead_grade: str, escalated: bool) -> dict:
        groups = {g["name"]: g for g in self.rules.value("working_groups")}
        active = self.rules.value("groups_by_level")[level]
        duties = self.rules.value("unit_duties")
        out = {"level": level, "lead": self.rules.value("response_levels")[lead_grade]["lead"],
               "clause": self.rules.rule("response_levels").citation(),
               "groups": [{"name": name, "lead": groups[name]["lead"], "members": groups[name]["members"],
                           "duty": groups[name]["duty"], "lead_duties": duties.get(groups[name]["lead"]),
                           "clause": f"廊政办字〔2021〕25号 二（二）（原文第 {groups[name]['line']} 行）"}
                          for name in active],
               "groups_clause": self.rules.rule("groups_by_level").citation()}
        if escalated:
            out["escalation_clause"] = self.rules.rule("escalation_levels").citation()
        return out


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(name, f"须为非负整数，收到 {shown(value)}", f"must be a whole number ≥ 0, got {shown(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise invalid(name, f"人数须为整数，收到 {shown(value)}", f"a count must be a whole number, got {shown(value)}")
    if value < 0:
        raise invalid(name, f"不能为负数，收到 {shown(value)}", f"must not be negative, got {shown(value)}")
    return int(value)


def _at_most(name: str, value, limit):
    """value, or a 422 above the rule fact_limits (a typing error; an answer could not even carry the number)."""
    if value > limit:
        raise invalid(name, f"不能大于 {limit:g}（规则 fact_limits），收到 {shown(value)}",
                      f"must not exceed {limit:g} (rule fact_limits), got {shown(value)}")
    return value


def more_severe(a: str, b: str) -> str:
    return a if GRADES.index(a) <= GRADES.index(b) else b
