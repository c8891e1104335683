"""A heavy spatial filter runs in the thread pool: other requests are answered meanwhile (issue #5: one
S_INTERSECTS with a county outline over the plots used to stall every other request)."""

import json
import threading
import time

import httpx
import shapely

from gis_service.config import REPO_ROOT


def test_a_light_request_is_answered_while_a_heavy_filter_runs(server):
    source = json.loads((REPO_ROOT / "layers/admin/langfang_counties_wgs84.geojson").read_text(encoding="utf-8"))
    city = shapely.union_all([shapely.geometry.shape(f["geometry"]) for f in source["features"]]).simplify(0.003)
    heavy_filter = f"S_INTERSECTS(geom, {shapely.to_wkt(city, rounding_precision=5)})"
    finished = {}

    def heavy(i):
        r = httpx.get(f"{server.url}/ogc/collections/plots/items", params={"filter": heavy_filter, "limit": 1000},
                      timeout=120)
        finished[f"heavy{i}"] = (time.monotonic(), r.status_code, r.json()["numberMatched"])

    threads = [threading.Thread(target=heavy, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    light = httpx.get(f"{server.url}/ogc/collections/counties/items", params={"limit": 1}, timeout=120)
    light_done = time.monotonic()
    for t in threads:
        t.join()
    assert light.status_code == 200 and light.json()["numberReturned"] == 1
    plots_total = httpx.get(f"{server.url}/ogc/collections/plots/items", params={"limit": 1}).json()["numberMatched"]
    for done, status, matched in finished.values():
        assert status == 200 and plots_total * 0.99 < matched <= plots_total  # the city holds (almost) every plot
    assert light_done < min(done for done, _, _ in finished.values())
