"""Rules as data: every threshold a verdict depends on, with the clause it comes from.

``gis_service/rules/<domain>.toml`` holds a domain's rules. Each rule is either *stated* in a 2021 Langfang
document (its document number, section and the seed line cited in ../shared/docs/requirements.md) or a
*setting* chosen here where the documents leave the value open (with the reason). A bureau changes values
in a local override file (``var/rules.local.toml`` by default) without touching code; a stated value that
is overridden is reported as overridden wherever rules are listed. A wrong file stops start-up naming the
file and key.

Override file format — one table per domain, rule id = new value::

    [admin]
    nearest_village_max_m = 3000
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import RuleFileError

RULES_DIR = Path(__file__).resolve().parent
BASES = ("stated", "setting")
_RULE_KEYS = {"id", "title_zh", "title_en", "value", "unit", "basis", "document", "clause", "line", "reason",
              "min", "max"}


@dataclass(frozen=True)
class Rule:
    domain: str
    id: str
    title_zh: str
    title_en: str
    value: object
    unit: str | None
    basis: str  # "stated" in a document, or a "setting" chosen here
    document: str | None  # e.g. 廊政办字〔2021〕37号
    clause: str | None  # section within the document
    line: int | None  # seed line, as cited in ../shared/docs/requirements.md
    reason: str | None  # why a setting has its default (required for settings)
    bounds: tuple[float | None, float | None] = (None, None)  # allowed range of a numeric value (inclusive)
    default: object = None  # the value in the rule file, before any local override
    overridden: bool = False
    path: Path = field(default=None, compare=False)  # the file the value comes from (the override file, if changed)

    @property
    def key(self) -> str:
        return f"{self.domain}.{self.id}"

    def citation(self) -> str:
        """Where the value comes from, in Chinese, for verdicts and reports."""
        if self.basis == "stated":
            where = " ".join(p for p in (self.document, self.clause) if p)
            text = f"{where}（原文第 {self.line} 行）" if self.line else where
        else:
            text = f"本系统设定（文件未规定）：{self.reason}"
        return f"{text}；已被本地配置修改，原值 {self.default}" if self.overridden else text

    def as_dict(self) -> dict:
        return {"key": self.key, "domain": self.domain, "id": self.id, "title_zh": self.title_zh,
                "title_en": self.title_en, "value": self.value, "unit": self.unit, "basis": self.basis,
                "document": self.document, "clause": self.clause, "line": self.line, "reason": self.reason,
                "min": self.bounds[0], "max": self.bounds[1], "default": self.default, "overridden": self.overridden,
                "citation": self.citation()}


class DomainRules:
    """One domain's rules: ``rules.value("nearest_village_max_m")``."""

    def __init__(self, domain: str, rules: dict[str, Rule]):
        self.domain = domain
        self._rules = rules

    def __iter__(self):
        return iter(self._rules.values())

    def rule(self, rule_id: str) -> Rule:
        try:
            return self._rules[rule_id]
        except KeyError:
            raise KeyError(f"no rule {self.domain}.{rule_id}") from None

    def value(self, rule_id: str):
        return self.rule(rule_id).value


class RuleBook:
    """Every domain's rules in force (files plus local overrides)."""

    def __init__(self, domains: dict[str, DomainRules], override_path: Path | None = None):
        self._domains = domains
        self.override_path = override_path

    @classmethod
    def load(cls, rules_dir: Path = RULES_DIR, override_path: Path | None = None) -> "RuleBook":
        domains = {path.stem: _load_file(path) for path in sorted(Path(rules_dir).glob("*.toml"))}
        if override_path is not None and Path(override_path).exists():
            _apply_overrides(domains, Path(override_path))
        return cls({name: DomainRules(name, rules) for name, rules in domains.items()}, override_path)

    def domain(self, name: str) -> DomainRules:
        return self._domains.get(name) or DomainRules(name, {})

    def __iter__(self):
        for domain in self._domains.values():
            yield from domain


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(path, "(syntax)", f"TOML 语法错误 {exc}", f"TOML syntax error: {exc}") from exc


def _load_file(path: Path) -> dict[str, Rule]:
    data = _read_toml(path)
    unknown = set(data) - {"rule"}
    if unknown:
        raise RuleFileError(path, sorted(unknown)[0], "未知的键（规则须写在 [[rule]] 中）", "unknown key (rules go in [[rule]])")
    rules: dict[str, Rule] = {}
    for i, entry in enumerate(data.get("rule", [])):
        where = f"rule[{i}]"

        def need(key, kind=str, optional=False):
            if key not in entry:
                if optional:
                    return None
                raise RuleFileError(path, f"{where}.{key}", "缺少必填项", "missing required key")
            value = entry[key]
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not str:
                name = "number" if isinstance(kind, tuple) else kind.__name__
                raise RuleFileError(path, f"{where}.{key}", f"类型应为 {name}", f"must be of type {name}")
            return value

        extra = set(entry) - _RULE_KEYS
        if extra:
            raise RuleFileError(path, f"{where}.{sorted(extra)[0]}", "未知的键", "unknown key")
        rule_id = need("id")
        if not rule_id.isidentifier() or not rule_id.islower():
            raise RuleFileError(path, f"{where}.id", "须为小写英文标识符", "must be a lower-case snake_case identifier")
        if rule_id in rules:
            raise RuleFileError(path, f"{where}.id", f"规则 {rule_id} 重复", f"duplicate rule id '{rule_id}'")
        basis = need("basis")
        if basis not in BASES:
            raise RuleFileError(path, f"{where}.basis", f"须为 {BASES} 之一", f"must be one of {BASES}")
        if "value" not in entry:
            raise RuleFileError(path, f"{where}.value", "缺少必填项", "missing required key")
        if basis == "stated":
            for key in ("document", "clause"):
                need(key)
            need("line", int)
        else:
            need("reason")
        bounds = tuple(need(k, (int, float), optional=True) for k in ("min", "max"))
        _check_value(entry["value"], bounds, path, f"{where}.value")
        rules[rule_id] = Rule(
            domain=path.stem, id=rule_id, title_zh=need("title_zh"), title_en=need("title_en"), value=entry["value"],
            unit=need("unit", optional=True), basis=basis, document=need("document", optional=True),
            clause=need("clause", optional=True), line=need("line", int, optional=True),
            reason=need("reason", optional=True), bounds=bounds, default=entry["value"], path=path)
    return rules


def _check_value(value, bounds, path: Path, key: str) -> None:
    """Numbers anywhere in a value are finite (TOML allows nan and inf); a numeric value lies within bounds."""
    numbers = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, float) and not math.isfinite(item):
            raise RuleFileError(path, key, "数值须为有限数", "numbers must be finite")
    low, high = bounds
    for number in numbers:
        if low is not None and number < low or high is not None and number > high:
            raise RuleFileError(path, key, f"须在 {low}–{high} 之间", f"must lie between {low} and {high}")


def _same_kind(a, b) -> bool:
    """Whether an override may replace a value: numbers for numbers, lists of the same kind, and so on."""
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, number) and isinstance(b, number):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return all(_same_kind(a[0], x) for x in b) if a else True
    if isinstance(a, dict) and isinstance(b, dict):
        return set(b) <= set(a) and all(_same_kind(a[k], v) for k, v in b.items())
    return type(a) is type(b)


def _apply_overrides(domains: dict[str, dict[str, Rule]], path: Path) -> None:
    for domain, values in _read_toml(path).items():
        if domain not in domains:
            raise RuleFileError(path, domain, "没有这个领域的规则", f"no rules for a domain '{domain}'")
        if not isinstance(values, dict):
            raise RuleFileError(path, domain, "须为表", "must be a table")
        for rule_id, value in values.items():
            rule = domains[domain].get(rule_id)
            if rule is None:
                raise RuleFileError(path, f"{domain}.{rule_id}", "没有这条规则", "no such rule")
            if not _same_kind(rule.default, value):
                raise RuleFileError(path, f"{domain}.{rule_id}", f"取值类型须与原值 {rule.default!r} 一致",
                                    f"must be of the same kind as the default {rule.default!r}")
            _check_value(value, rule.bounds, path, f"{domain}.{rule_id}")
            changed = value != rule.default
            domains[domain][rule_id] = replace(rule, value=value, overridden=changed,
                                               path=path if changed else rule.path)
