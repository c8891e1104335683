"""Layer definitions: the shipped ones load; a wrong one stops start-up naming file and key."""

import json

import pytest

from gis_service.catalog import Catalog, load_definition
from gis_service.errors import DefinitionError


def test_every_layer_the_issue_requires_is_defined(catalog):
    required = {"counties", "city_boundary", "neighbor_counties", "rivers", "grand_canal_historical", "railways",
                "hsr_lines", "hsr_stations", "weather_stations", "bus_stops", "villages", "canal_channels",
                "heritage_sites", "land_use", "risk_sources", "pipelines", "residential_areas",
                "sensitive_receptors", "water_sources", "water_protection_zones", "eco_redline", "urban_districts",
                "underpasses", "waterlogging_points", "pumping_stations", "drainage_channels", "drainage_gates",
                "dem", "plots", "contractor_households"}
    assert required <= {layer.id for layer in catalog}


def test_access_classes_of_the_demo(catalog):
    assert catalog.get("counties").access == "public"
    assert catalog.get("risk_sources").access == "internal"
    households = catalog.get("contractor_households")
    assert households.access == "restricted" and not households.can_see_layer("planner")
    assert households.can_see_layer("rural") and households.can_see_layer("admin")
    plots = catalog.get("plots")
    assert plots.access == "public"
    assert {f.personal for f in plots.personal_fields} == {"name", "id_number", "phone"}
    assert not plots.sees_personal("planner") and plots.sees_personal("rural")


@pytest.mark.parametrize("replace, key", [
    (('access = "public"', 'access = "secret"'), "access"),
    (('type = "integer"', 'type = "int64"'), "fields[0].type"),
    (('popup = ["name", "adcode"]', 'popup = ["name", "nosuch"]'), "popup"),
    (('id = "counties"', 'id = "county"'), "id"),
    (("weight = 2", 'weight = "2px"'), "style.weight"),
    (("label_size = 15", 'label_size = "14px"'), "style.label_size"),
    (('color = "#555555"', 'color = "red;background:url(x)"'), "style"),
    (("weight = 2", "weight = true"), "style.weight"),
    (('access = "public"', 'access = "public"\nindexes = ["nosuch"]'), "indexes"),
    (('access = "public"', 'access = "public"\nindexes = "adcode"'), "indexes"),
])
def test_wrong_definition_names_file_and_key(tmp_path, catalog, replace, key):
    src = catalog.get("counties").path
    (tmp_path / "admin").mkdir()
    bad = tmp_path / "admin" / "counties.toml"
    bad.write_text(src.read_text(encoding="utf-8").replace(*replace), encoding="utf-8")
    with pytest.raises(DefinitionError) as err:
        Catalog.load(tmp_path)
    assert err.value.key == key
    assert str(bad) in err.value.message_en


def test_restricted_layer_must_name_its_roles(tmp_path, catalog):
    text = catalog.get("contractor_households").path.read_text(encoding="utf-8").replace('roles = ["rural"]\n', "")
    path = tmp_path / "contractor_households.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DefinitionError) as err:
        load_definition(path)
    assert err.value.key == "roles"


def _layer_root(tmp_path, catalog, groups_toml: str | None, folder: str = "admin", replace=("", "")):
    """A layers/ directory with the counties definition in `folder` and the given groups.toml (None: no file)."""
    (tmp_path / folder).mkdir()
    path = tmp_path / folder / "counties.toml"
    path.write_text(catalog.get("counties").path.read_text(encoding="utf-8").replace(*replace), encoding="utf-8")
    if groups_toml is not None:
        (tmp_path / "groups.toml").write_text(groups_toml, encoding="utf-8")
    return path


GROUPS = """
[transport]
title_zh = "交通"
title_en = "Transport"
order = 1

[admin]
title_zh = "行政区划"
title_en = "Administrative divisions"
order = 2
"""


def test_shipped_groups_cover_every_layer_folder_in_the_index_order(catalog):
    assert list(catalog.groups) == ["admin", "canal", "risk_zones", "flood", "land", "transport"]
    assert catalog.groups["risk_zones"].title_zh == "突发环境事件"
    assert {layer.group for layer in catalog} <= set(catalog.groups)


def test_groups_are_listed_in_the_order_the_file_gives(tmp_path, catalog):
    _layer_root(tmp_path, catalog, GROUPS)
    groups = Catalog.load(tmp_path).groups
    assert [(g.id, g.title_zh, g.order) for g in groups.values()] == [("transport", "交通", 1), ("admin", "行政区划", 2)]


@pytest.mark.parametrize("groups_toml", [GROUPS.replace("[admin]", "[canal]"), None])
def test_layer_folder_without_group_entry_is_named(tmp_path, catalog, groups_toml):
    _layer_root(tmp_path, catalog, groups_toml)
    with pytest.raises(DefinitionError) as err:
        Catalog.load(tmp_path)
    assert err.value.key == "admin" and str(tmp_path / "groups.toml") in err.value.message_en


@pytest.mark.parametrize("replace, key", [
    (("order = 2", 'order = "2"'), "admin.order"),
    (('title_zh = "行政区划"\n', ""), "admin.title_zh"),
    (("order = 2", "order = 2\ncolour = 1"), "admin.colour"),
    (("[admin]", "[Admin]"), "Admin"),
    (("order = 2", "order = "), "(syntax)"),
])
def test_wrong_groups_file_names_file_and_key(tmp_path, catalog, replace, key):
    _layer_root(tmp_path, catalog, GROUPS.replace(*replace))
    with pytest.raises(DefinitionError) as err:
        Catalog.load(tmp_path)
    assert err.value.key == key and str(tmp_path / "groups.toml") in err.value.message_en


@pytest.mark.parametrize("name", ["Name", 'na"me', "na'me", "name; DROP TABLE counties", "1st", "名称", "a b",
                                  "fid", "geom", "geometry", "order", "select", "__popup", "name\n"])
def test_field_name_must_be_a_plain_identifier(tmp_path, catalog, name):
    path = _layer_root(tmp_path, catalog, GROUPS, replace=('name = "adcode"', f"name = {json.dumps(name)}"))
    with pytest.raises(DefinitionError) as err:
        Catalog.load(tmp_path)
    assert err.value.key == "fields[0].name" and str(path) in err.value.message_en


@pytest.mark.parametrize("layer_id", ["Counties", "counties__geojson", "c-o", "select"])
def test_layer_id_must_be_a_plain_identifier(tmp_path, catalog, layer_id):
    (tmp_path / "admin").mkdir()
    path = tmp_path / "admin" / f"{layer_id}.toml"
    path.write_text(catalog.get("counties").path.read_text(encoding="utf-8")
                    .replace('id = "counties"', f'id = "{layer_id}"'), encoding="utf-8")
    with pytest.raises(DefinitionError) as err:
        load_definition(path)
    assert err.value.key == "id"
