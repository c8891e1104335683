"""Export a layer to GeoPackage, GeoJSON, Shapefile (UTF-8 .cpg), CSV (WKT) or Excel (Chinese headers)."""

from __future__ import annotations

import getpass
from pathlib import Path

import pandas as pd
import pyogrio
from tqdm import tqdm

from .catalog import LayerDef
from .config import Settings
from .privacy import AccessLog, mask_properties
from .store import Store

FORMATS = {"gpkg": ("GPKG", ".gpkg", {}), "geojson": ("GeoJSON", ".geojson", {}),
           "shp": ("ESRI Shapefile", ".shp", {"ENCODING": "UTF-8"}), "csv": ("CSV", ".csv", {"GEOMETRY": "AS_WKT"}),
           "xlsx": (None, ".xlsx", {})}


def export_layer(store: Store, layer: LayerDef, fmt: str, crs: str, output: Path | None = None,
                 unmask: bool = False) -> Path:
    driver, suffix, options = FORMATS[fmt]
    output = output or Settings.from_env().maps_dir.parent / "exports" / f"{layer.id}{suffix}"
    output.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(total=3, desc=f"导出 {layer.id}", unit="步", disable=store.count(layer) < 20_000) as bar:
        frame = store.read_frame(layer)
        bar.update()
        names = [f.name for f in layer.fields]
        if layer.personal_fields:
            if unmask:
                AccessLog(Settings.from_env().var_dir / "personal_data_access.log").record(
                    f"cli:{getpass.getuser()}", "operator", layer, [f.name for f in layer.personal_fields], len(frame), f"export {output}")
            else:
                rows = mask_properties(layer, frame[names].astype(object).to_dict("records"))
                frame[names] = pd.DataFrame(rows, index=frame.index)[names]
        frame = frame.to_crs(crs)
        bar.update()
        if driver is None:
            table = pd.DataFrame(frame[names]).rename(columns={f.name: f.label for f in layer.fields})
            table["几何（WKT）"] = frame.geometry.to_wkt()
            table.to_excel(output, index=False, sheet_name=layer.title_zh[:31])
        else:
            if output.exists():
                output.unlink()
            pyogrio.write_dataframe(frame, output, layer=layer.id, driver=driver, layer_options=options or None)
        bar.update()
    return output
