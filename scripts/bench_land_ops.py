"""Benchmark of the land checks, 四至 and import (issue #9 §5–§7) on the built plots layer.

    .venv/bin/python scripts/bench_land_ops.py [--import-dry-run]

Prints the time of each check and of the 四至 over the whole register (read from the layer, in-process, as
the server computes them on first request), the counts found, and optionally a dry-run import of the
whole layer exported as a zipped Shapefile. Not run by the test suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.benchlib import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--import-dry-run", action="store_true", help="also validate the whole layer as an import")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import pyogrio

    from gis_service.catalog import Catalog
    from gis_service.config import Settings
    from gis_service.crs import METRIC_CRS
    from gis_service.domains import SYSTEM, DomainContext
    from gis_service.land import boundaries, checks, imports
    from gis_service.land.ops_router import OpsService
    from gis_service.rules import RuleBook
    from gis_service.store import GeoPackageStore

    print(machine())
    settings = Settings.from_env()
    catalog, store = Catalog.load(settings.layers_dir), GeoPackageStore()
    rules = RuleBook.load(override_path=settings.rules_override).domain("land")
    ctx = DomainContext(settings, catalog, store, None, rules, None)
    t = time.perf_counter()
    plots = ctx.frame("plots", "EPSG:4490", SYSTEM)
    metric = ctx.frame("plots", METRIC_CRS, SYSTEM)
    print(f"plots: {len(plots):,}; read and projected in {time.perf_counter() - t:.2f} s")
    for name, run in (
            ("area mismatch > 5%", lambda: checks.area_mismatch(plots, rules.value("area_mismatch_pct"))),
            ("non-farm use (L1194)", lambda: checks.non_farm_use(plots, rules.value("non_farm_uses"))),
            ("overlaps", lambda: checks.overlaps(metric, rules.value("overlap_min_m2"), rules.value("mu_per_square_metre")))):
        t = time.perf_counter()
        found = run()
        print(f"{name:<24} {time.perf_counter() - t:6.2f} s  {len(found):,} rows")
    ops = OpsService(ctx)
    t = time.perf_counter()
    features, _ = ops._features()
    t1 = time.perf_counter()
    computed = boundaries.compute(metric, features, float(rules.value("boundary_tolerance_m")),
                                  float(rules.value("boundary_min_share")))
    t2 = time.perf_counter()
    recorded = metric[["dkbm", "dkdz", "dkxz", "dknz", "dkbz"]]
    out = boundaries.compare(computed, recorded, rules.value("boundary_kind_words"),
                             float(rules.value("boundary_dominant_share")))
    t3 = time.perf_counter()
    print(f"四至 features {t1 - t:.2f} s, neighbours {t2 - t1:.2f} s, comparison {t3 - t2:.2f} s "
          f"(total {t3 - t:.2f} s for {len(out):,} sides)")
    print("四至 status:", out["status"].value_counts().to_dict(),
          f"plots with a mismatch: {out.loc[out['status'] == 'mismatch', 'dkbm'].nunique():,}")
    print("四至 neighbour kinds:", out["neighbour_kind"].value_counts().to_dict())
    county = metric["county_adcode"].value_counts().index[0]  # the county with the most plots
    one = metric[metric["county_adcode"] == county]
    t = time.perf_counter()
    part = boundaries.compute(one, features, float(rules.value("boundary_tolerance_m")),
                              float(rules.value("boundary_min_share")))
    boundaries.compare(part, one[["dkbm", "dkdz", "dkxz", "dknz", "dkbz"]], rules.value("boundary_kind_words"),
                       float(rules.value("boundary_dominant_share")))
    print(f"四至 of one county ({county}, {len(one):,} plots): {time.perf_counter() - t:.2f} s")
    # the same plots turned 30° about the county's centre: no axis-aligned rectangles, every side from its edges
    centre = one.geometry.union_all().centroid
    turned = one.set_geometry(one.geometry.rotate(30, origin=centre))
    t = time.perf_counter()
    part = boundaries.compute(turned, [], float(rules.value("boundary_tolerance_m")),
                              float(rules.value("boundary_min_share")))
    print(f"四至 of that county turned 30° (edge strips, no features): {time.perf_counter() - t:.2f} s, "
          f"{(part['neighbour_kind'] == boundaries.PLOT_KIND).mean():.1%} of sides with a plot")
    if args.import_dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            shp = Path(tmp) / "dk.shp"
            frame = plots.to_crs("EPSG:4527")
            pyogrio.write_dataframe(frame, shp, driver="ESRI Shapefile", encoding="GBK")
            with zipfile.ZipFile(Path(tmp) / "dk.zip", "w", zipfile.ZIP_DEFLATED) as zf:
                for p in Path(tmp).glob("dk.*"):
                    if p.suffix != ".zip" and p.suffix != ".cpg":
                        zf.write(p, p.name)
            settings_tmp = Settings.from_env(var_dir=Path(tmp) / "var")
            ctx_tmp = DomainContext(settings_tmp, catalog, store, None, rules, None)
            t = time.perf_counter()
            result = imports.run_import(ctx_tmp, Path(tmp) / "dk.zip", dry_run=True)
            report = result["report"]
            print(f"import dry run (GBK Shapefile, EPSG:4527, no .cpg) {time.perf_counter() - t:.2f} s: "
                  f"{report['features']:,} features, encoding {report['encoding']}, crs {report['crs']}, "
                  f"errors {[e['code'] for e in report['errors']]}, warnings {[w['code'] for w in report['warnings']]}")


if __name__ == "__main__":
    main()
