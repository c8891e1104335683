"""Export a layer to GeoPackage, GeoJSON, Shapefile (UTF-8 .cpg), CSV (WKT) or Excel (Chinese headers)."""

from __future__ import annotations

import getpass
import io
from pathlib import Path

import pandas as pd
import pyogrio
from tqdm import tqdm

from .catalog import LayerDef
from .config import Settings
from .privacy import mask_properties
from .backends import open_access_log
from .store import Store

FORMATS = {"gpkg": ("GPKG", ".gpkg", {}), "geojson": ("GeoJSON", ".geojson", {}),
           "shp": ("ESRI Shapefile", ".shp", {"ENCODING": "UTF-8"}), "csv": ("CSV", ".csv", {"GEOMETRY": "AS_WKT"}),
           "xlsx": (None, ".xlsx", {})}


# A spreadsheet runs a cell beginning with one of these as a formula (CSV/formula injection, OWASP).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Text cells that Excel or WPS would run as a formula get a leading apostrophe, so a name imported as
    ``=HYPERLINK(…)`` stays text; numbers are left alone."""
    out = table.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
    return out


def csv_bytes(table: pd.DataFrame) -> bytes:
    """UTF-8 with a byte-order mark, so that Excel opens the Chinese headers correctly; formulas defused."""
    return spreadsheet_safe(table).to_csv(index=False).encode("utf-8-sig")


def xlsx_bytes(table: pd.DataFrame, sheet: str) -> bytes:
    buffer = io.BytesIO()
    spreadsheet_safe(table).to_excel(buffer, index=False, sheet_name=sheet[:31])
    return buffer.getvalue()


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
                open_access_log(Settings.from_env()).record(
                    f"cli:{getpass.getuser()}", "operator", layer.id, [f.name for f in layer.personal_fields], len(frame), f"export {output}")
            else:
                rows = mask_properties(layer, frame[names].astype(object).to_dict("records"))
                frame[names] = pd.DataFrame(rows, index=frame.index)[names]
        frame = frame.to_crs(crs)
        bar.update()
        if fmt == "csv":  # a spreadsheet opens it: text cells never run as formulas (xlsx_bytes does the same)
            frame[names] = spreadsheet_safe(pd.DataFrame(frame[names]))
        if driver is None:
            table = pd.DataFrame(frame[names]).rename(columns={f.name: f.label for f in layer.fields})
            table["几何（WKT）"] = frame.geometry.to_wkt()
            output.write_bytes(xlsx_bytes(table, layer.title_zh))
        else:
            if output.exists():
                output.unlink()
            pyogrio.write_dataframe(frame, output, layer=layer.id, driver=driver, layer_options=options or None)
        bar.update()
    return output
