"""Rules as data: the shipped files load and cite their sources; wrong files stop start-up naming file and
key; local overrides are applied and reported; /api/rules and /maps/rules list every rule."""

import tomllib

import httpx
import pytest

from gis_service.errors import RuleFileError
from gis_service.rules import RULES_DIR, RuleBook

STATED = """
[[rule]]
id = "closure_depth_cm"
title_zh = "道路封闭水深"
title_en = "Road closure depth"
value = 30
unit = "cm"
basis = "stated"
document = "2021年城区防汛工作方案"
clause = "五、（三）"
line = 4283
"""
SETTING = """
[[rule]]
id = "watch_depth_cm"
title_zh = "关注水深"
title_en = "Watch depth"
value = 15
unit = "cm"
basis = "setting"
reason = "文件未规定"
"""


def write(tmp_path, text, name="flood.toml"):
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / name).write_text(text, encoding="utf-8")
    return rules


def test_every_shipped_rule_names_its_source():
    book = RuleBook.load()
    files = sorted(RULES_DIR.glob("*.toml"))
    expected = {f"{p.stem}.{r['id']}" for p in files for r in tomllib.loads(p.read_text(encoding="utf-8"))["rule"]}
    assert {r.key for r in book} == expected and expected
    for rule in book:
        if rule.basis == "stated":
            assert rule.document and rule.clause and rule.line and str(rule.line) in rule.citation()
        else:
            assert rule.reason and rule.reason in rule.citation()


@pytest.mark.parametrize("text, key", [
    (STATED.replace('basis = "stated"', 'basis = "maybe"'), "rule[0].basis"),
    (STATED.replace("line = 4283\n", ""), "rule[0].line"),
    (STATED.replace('line = 4283', 'line = "L4283"'), "rule[0].line"),
    (SETTING.replace('reason = "文件未规定"\n', ""), "rule[0].reason"),
    (STATED.replace("value = 30\n", ""), "rule[0].value"),
    (STATED + "colour = 1\n", "rule[0].colour"),
    (STATED + STATED, "rule[1].id"),
    (STATED.replace("value = 30", "value = nan"), "rule[0].value"),
    (STATED.replace("value = 30", "value = 30\nmin = 0\nmax = 20"), "rule[0].value"),
    (STATED.replace("value = 30", "value = 30\nmin = '0'"), "rule[0].min"),
    ("[[rule]\nid = 1", "(syntax)"),
])
def test_a_wrong_rule_file_names_file_and_key(tmp_path, text, key):
    rules = write(tmp_path, text)
    with pytest.raises(RuleFileError) as err:
        RuleBook.load(rules)
    assert err.value.key == key and "flood.toml" in str(err.value.path)


def test_overrides_apply_and_are_reported(tmp_path):
    rules = write(tmp_path, STATED + SETTING)
    override = tmp_path / "rules.local.toml"
    override.write_text("[flood]\nclosure_depth_cm = 25\nwatch_depth_cm = 15.0\n", encoding="utf-8")
    book = RuleBook.load(rules, override).domain("flood")
    closure = book.rule("closure_depth_cm")
    assert closure.value == 25 and closure.default == 30 and closure.overridden
    assert "已被本地配置修改，原值 30" in closure.citation()
    assert book.value("watch_depth_cm") == 15 and not book.rule("watch_depth_cm").overridden


@pytest.mark.parametrize("text, key", [
    ("[flood]\nclosure_depth_cm = '30'\n", "flood.closure_depth_cm"),
    ("[flood]\nclosure_depth_cm = true\n", "flood.closure_depth_cm"),
    ("[flood]\nno_such_rule = 1\n", "flood.no_such_rule"),
    ("[canal]\nx = 1\n", "canal"),
    ("[flood]\nclosure_depth_cm = nan\n", "flood.closure_depth_cm"),
    ("[flood]\nclosure_depth_cm = -5\n", "flood.closure_depth_cm"),
])
def test_a_wrong_override_names_file_and_key(tmp_path, text, key):
    rules = write(tmp_path, STATED.replace("value = 30", "value = 30\nmin = 0"))
    override = tmp_path / "rules.local.toml"
    override.write_text(text, encoding="utf-8")
    with pytest.raises(RuleFileError) as err:
        RuleBook.load(rules, override)
    assert err.value.key == key and err.value.path == override


def test_api_and_page_list_every_rule_with_its_source(server):
    book = RuleBook.load()
    answer = httpx.get(f"{server.url}/api/rules").json()
    assert answer["override_location"].startswith("$GIS_VAR_DIR/rules.local.toml")  # the embedded store's server
    listed = answer["rules"]
    assert {r["key"] for r in listed} == {r.key for r in book}
    for r in listed:
        assert r["citation"] == book.domain(r["domain"]).rule(r["id"]).citation()
    page = httpx.get(f"{server.url}/maps/rules")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for rule in book:
        assert rule.key in page.text and rule.title_zh in page.text
