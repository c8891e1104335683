"""Import authoritative data over a layer: validated against its definition, checked to lie in Langfang,
converted to CGCS2000, and swapped in atomically (a failed import leaves the previous data intact)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from tqdm import tqdm

from . import crs as crs_mod
from .catalog import LayerDef
from .errors import GisError
from .store import Store


def read_for_import(layer: LayerDef, path: Path, coord_sys: str | None) -> gpd.GeoDataFrame:
    try:
        frame = pyogrio.read_dataframe(path)
    except Exception as exc:  # GDAL reports unreadable files in many ways
        raise GisError("unreadable_file", f"无法读取文件 {path.name}", f"cannot read {path.name}: {exc}", 422) from None
    frame = frame.rename(columns={f.source: f.name for f in layer.fields if f.source})
    if coord_sys is None:
        if frame.crs is None:
            raise GisError("missing_crs", "文件没有坐标系信息，请用 --coord-sys 指定",
                           "the file has no CRS; state it with --coord-sys", 422)
        source = frame.crs
        coords = shapely.get_coordinates(frame.geometry.values)
        lon, lat = crs_mod.transform_xy(coords[:, 0], coords[:, 1], source, crs_mod.STORAGE_CRS)
        _check_inside(lon, lat)
        return frame
    cs = crs_mod.parse_coord_sys(coord_sys)
    geoms = np.array([crs_mod.geometry_to_storage(g, cs) for g in frame.geometry.values], dtype=object)
    return gpd.GeoDataFrame(frame.drop(columns="geometry"), geometry=geoms, crs=crs_mod.STORAGE_CRS)


def _check_inside(lon, lat) -> None:
    outside = ~crs_mod.inside_langfang(lon, lat)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise GisError("coordinate_outside_langfang",
                       f"第 {i + 1} 个坐标 ({lon[i]:g}, {lat[i]:g}) 不在廊坊市范围内：请检查坐标系（轴顺序、带号、GCJ-02）",
                       f"coordinate {i + 1} ({lon[i]:g}, {lat[i]:g}) is outside Langfang: check the CRS "
                       "(axis order, zone prefix, GCJ-02)", 422)


def import_layer(store: Store, layer: LayerDef, path: Path, coord_sys: str | None = None) -> int:
    with tqdm(total=2, desc=f"导入 {layer.id}", unit="步") as bar:
        frame = read_for_import(layer, path, coord_sys)
        bar.update()
        count = store.write(layer, frame, origin="imported")
        bar.update()
    return count
