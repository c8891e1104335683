"""Build the store: import the real layers from their committed sources, generate the demo layers."""

from __future__ import annotations


import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from tqdm import tqdm

from . import demo
from .catalog import Catalog, LayerDef
from .store import Store


def read_source(layer: LayerDef) -> gpd.GeoDataFrame:
    """A real layer's committed source file, with properties renamed to the definition's field names."""
    frame = gpd.read_file(layer.path.with_name(layer.source))
    frame = frame.set_crs(layer.source_crs, allow_override=True)
    return frame.rename(columns={f.source: f.name for f in layer.fields if f.source})


def missing(catalog: Catalog, store: Store | None = None) -> list[LayerDef]:
    """Layers build-layers must write: no data yet in the store (derived layers are their domain's to write)."""
    return [layer for layer in catalog
            if not layer.derived and not (store.exists(layer) if store is not None else layer.data_path.exists())]


def build_layers(catalog: Catalog, store: Store, plots: int = demo.DEFAULT_PLOTS,
                 regenerate_demo: bool = False, progress: bool = True) -> list[str]:
    """Write the layers that have no data yet; returns the ids written.

    Never overwrites data a user imported, nor a real (non-demo) layer that exists. regenerate_demo
    (the confirmed ``build-layers --regenerate-demo``) also rewrites layers whose data the generator wrote."""
    todo = {layer.id for layer in missing(catalog, store)}
    if regenerate_demo:
        todo |= {layer.id for layer in catalog if layer.demo and store.origin(layer) == "demo"}
    if not todo:
        return []
    real = [layer for layer in catalog if layer.source and layer.id in todo]
    needs_demo = any(layer.demo and not layer.source and layer.id in todo for layer in catalog)
    steps = len(real) + (len(DEMO_STEPS) if needs_demo else 0)
    bar = tqdm(total=steps, desc="构建图层 building layers", unit="层", disable=not progress)
    written = []
    for layer in real:
        bar.set_postfix_str(layer.id)
        store.write(layer, read_source(layer), origin="source")
        written.append(layer.id)
        bar.update()
    if needs_demo:
        written += _build_demo(catalog, store, plots, bar, todo)
    bar.close()
    return written


DEMO_STEPS = ("canal_channels", "villages", "heritage_sites", "green_corridors", "land_use", "plots", "risk",
              "receptors", "flood", "dem")


def _build_demo(catalog: Catalog, store: Store, n_plots: int, bar, todo: set[str]) -> list[str]:
    """Generate the demo layers together (they depend on each other) and write only those in todo."""
    base = demo.load_base(catalog.root)
    rng = np.random.default_rng(demo.SEED)
    out: dict[str, gpd.GeoDataFrame] = {}

    def step(name):
        bar.set_postfix_str(name)

    step("canal_channels")
    out["canal_channels"] = demo.canal_channels(base)
    bar.update()
    step("villages")
    out["villages"] = demo.villages(base, rng)
    out["townships"] = demo.townships(base, np.random.default_rng(demo.SEED))  # the seats villages were placed around
    bar.update()
    step("heritage_sites")
    out["heritage_sites"] = demo.heritage_sites(base, out["canal_channels"])
    bar.update()
    step("green_corridors")
    # Own stream: the corridor's sections do not shift the draws of the layers generated after it.
    out["green_corridors"] = demo.green_corridors(base, out["canal_channels"], np.random.default_rng([demo.SEED, 6]))
    out["river_boundaries"] = demo.river_boundaries(base, out["canal_channels"])
    bar.update()
    step("land_use")
    built = demo.built_up_areas(base, out["villages"], rng)
    water = shapely.union_all(out["canal_channels"].geometry.values).buffer(60).intersection(base.city)
    out["land_use"] = demo.land_use(base, built, water, rng)
    bar.update()
    step("plots")
    lu = out["land_use"]
    farmland = shapely.union_all(lu.loc[lu["class_name"].isin(["耕地", "永久基本农田"])].geometry.values)
    basic = shapely.union_all(lu.loc[lu["is_basic_farmland"]].geometry.values)
    # Land, risk and flood layers draw from their own streams: changing one group (say the plot count)
    # never moves the features of another.
    out["plots"], out["contractor_households"] = demo.plots(base, out["villages"], farmland, basic, n_plots,
                                                            np.random.default_rng([demo.SEED, 50]))
    register = land_register(out, catalog, store, todo)
    bar.update()
    step("risk")
    rng = np.random.default_rng([demo.SEED, 30])
    out["risk_sources"] = demo.risk_sources(base, built, rng)
    out["pipelines"] = demo.pipelines(base)
    bar.update()
    step("receptors")
    out["residential_areas"] = demo.residential_areas(base, built, rng)
    out["sensitive_receptors"] = demo.sensitive_receptors(base, built, rng)
    out["water_sources"], out["water_protection_zones"] = demo.water_sources(base, built, rng)
    out["eco_redline"] = demo.eco_redline(base, out["canal_channels"])
    bar.update()
    step("flood")
    rng = np.random.default_rng([demo.SEED, 40])
    out["urban_districts"] = demo.urban_districts(base)
    out["underpasses"] = demo.underpasses(base, out["urban_districts"], rng)
    out["waterlogging_points"] = demo.waterlogging_points(out["urban_districts"], out["underpasses"])
    out["drainage_channels"] = demo.drainage_channels(base)
    out["drainage_gates"] = demo.drainage_gates(out["drainage_channels"])
    out["pumping_stations"] = demo.pumping_stations(out["drainage_channels"], rng)
    bar.update()
    written = []
    for layer_id, frame in out.items():
        layer = catalog.get(layer_id)
        if layer is None or layer_id not in todo:  # definition removed, or data present: leave it
            continue
        bar.set_postfix_str(f"写入 {layer_id}")
        store.write(layer, frame, origin="demo")
        written.append(layer_id)
    if register is not None:
        bar.set_postfix_str("写入 land register")
        land_register_write(catalog, register)
    step("dem")
    dem_layer = catalog.get("dem")
    if dem_layer is not None and "dem" in todo:
        demo.dem(base, out["underpasses"], dem_layer.data_path, rng)
        written.append("dem")
    bar.update()
    return written



def land_register(out: dict, catalog: Catalog, store: Store, todo: set[str]) -> dict | None:
    """The land register (layers/land/register.sqlite) drawn with the demo plots, when it is to be written:
    the plots are written now, or the register is missing beside demo plots. Sets the plots' transfer and
    mortgage status and their extended end (rule land.extension_years). Never replaces a register whose
    origin is not 'demo' (see gis_service/land/register.py)."""
    from .land import register as land_reg
    from .rules import RuleBook

    layer = catalog.get("plots")
    if layer is None or catalog.root is None:
        return None
    path = land_reg.path_in(catalog.root)
    origin = land_reg.origin(path)
    plots_now = "plots" in todo
    if origin not in (None, "demo") or not (plots_now or (origin is None and store.origin(layer) == "demo")):
        return None
    years = RuleBook.load().domain("land").value("extension_years")
    plots = out["plots"]
    tables = demo.land_register(plots, out["contractor_households"], out["villages"],
                                np.random.default_rng([demo.SEED, 51]))
    end = pd.to_datetime(plots["contract_end"])
    plots["extended_end"] = (end + pd.DateOffset(years=years)).dt.strftime("%Y-%m-%d")
    return tables


def land_register_write(catalog: Catalog, tables: dict) -> None:
    from .land import register as land_reg

    land_reg.write(land_reg.path_in(catalog.root), tables, "demo")
