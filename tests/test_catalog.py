"""Layer definitions: the shipped ones load; a wrong one stops start-up naming file and key."""


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
