"""The canal service's input checks without a server: a GeoJSON geometry's structure is checked on the parsed
JSON, before shapely builds anything, and the vertex limit is the rule canal.check_max_vertices."""

from types import SimpleNamespace

import pytest
import shapely.geometry

from gis_service.canal import service
from gis_service.canal.service import CanalService, check_geojson
from gis_service.errors import GisError
from gis_service.rules import RuleBook

RULES = RuleBook.load().domain("canal")
MOST = RULES.value("check_max_vertices")


def _service() -> CanalService:
    """A CanalService whose context has only the rules: enough for project_geometry's checks before shapely."""
    svc = CanalService.__new__(CanalService)
    svc.ctx = SimpleNamespace(rules=RULES)
    return svc


def _refused(geojson, most=MOST) -> GisError:
    with pytest.raises(GisError) as err:
        check_geojson(geojson, most)
    assert err.value.status == 422
    return err.value


def test_too_many_coordinates_are_refused_before_shapely_builds_a_geometry(monkeypatch):
    def shape(*args, **kwargs):
        raise AssertionError("shapely.geometry.shape was called")

    monkeypatch.setattr(shapely.geometry, "shape", shape)
    body = {"type": "MultiPoint", "coordinates": [[116.7, 39.5]] * (MOST + 1)}
    with pytest.raises(GisError) as err:
        _service().project_geometry(body, "wgs84")
    assert err.value.code == "too_many_vertices" and str(MOST) in err.value.message


def test_the_walk_stops_at_the_limit():
    # what follows the (limit + 1)-th position is never looked at: the answer is the count, not the garbage
    body = {"type": "MultiPoint", "coordinates": [[116.7, 39.5]] * (MOST + 1) + ["not a position"] * 1000}
    assert _refused(body).code == "too_many_vertices"
    assert _refused({"type": "LineString", "coordinates": [[116.7, 39.5]] * 5}, most=4).code == "too_many_vertices"
    check_geojson({"type": "LineString", "coordinates": [[116.7, 39.5], [116.8, 39.5]] * 2}, 4)  # exactly 4


@pytest.mark.parametrize("geojson, code", [
    ({"type": ["Point"], "coordinates": [1, 2]}, "unsupported_geometry"),
    ({"type": {"Point": 1}, "coordinates": [1, 2]}, "unsupported_geometry"),
    ({"type": 5, "coordinates": [1, 2]}, "unsupported_geometry"),
    ({"type": "GeometryCollection", "geometries": []}, "unsupported_geometry"),
    ({"type": "Point"}, "malformed_geometry"),
    ({"type": "Point", "coordinates": []}, "empty_geometry"),
    ({"type": "Point", "coordinates": [[116.7, 39.5]]}, "malformed_geometry"),
    ({"type": "Point", "coordinates": [116.7]}, "malformed_geometry"),
    ({"type": "Point", "coordinates": [116.7, 39.5, 1, 2]}, "malformed_geometry"),
    ({"type": "Point", "coordinates": [True, False]}, "malformed_geometry"),
    ({"type": "Point", "coordinates": [float("nan"), 39.5]}, "malformed_geometry"),
    ({"type": "Point", "coordinates": [10 ** 400, 39.5]}, "malformed_geometry"),
    ({"type": "LineString", "coordinates": [[116.7, 39.5]]}, "malformed_geometry"),
    ({"type": "MultiLineString", "coordinates": [[]]}, "malformed_geometry"),
    ({"type": "Polygon", "coordinates": [5]}, "malformed_geometry"),
    ({"type": "Polygon", "coordinates": "abc"}, "malformed_geometry"),
    ({"type": "Polygon", "coordinates": [[[116.7, 39.5], [116.8, 39.5], [116.7, 39.5]]]}, "malformed_geometry"),
    ({"type": "MultiPolygon", "coordinates": [[], [[[116.7, 39.5], [116.8, 39.5], [116.8, 39.6], [116.7, 39.5]]]]},
     "malformed_geometry"),
])
def test_structure_is_checked_on_the_json(geojson, code):
    assert _refused(geojson).code == code


def test_two_simple_lines_that_cross_each_other_are_a_valid_multilinestring():
    roads = {"type": "MultiLineString", "coordinates": [[[116.70, 39.50], [116.71, 39.51]],
                                                         [[116.70, 39.51], [116.71, 39.50]]]}
    check_geojson(roads, MOST)
    assert service._self_crossing(shapely.geometry.shape(roads)) is None
    ring = shapely.geometry.shape({"type": "LineString", "coordinates": [[0, 0], [1, 0], [1, 1], [0, 0]]})
    assert service._self_crossing(ring) is None  # a closed line is simple
    figure8 = shapely.LineString([(0, 0), (2, 2), (2, 0), (0, 2)])
    assert service._self_crossing(figure8) == (1.0, 1.0)
