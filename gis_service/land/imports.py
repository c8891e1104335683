"""Import of a plot register (issue #9 §7): zipped Shapefile, GeoPackage or GeoJSON over the layer ``plots``.

Steps, each refusing bad input with a 4xx GisError {code, message}:

1. **Unpack** (``unpack``): an archive is checked before and while it is extracted — member names (no absolute
   paths, drive letters, ``..`` or links: path traversal), number of members, total uncompressed size and each
   member's compression ratio (zip bombs; the sizes in the archive's directory are checked first, then the bytes
   actually inflated, so a lying header does not help). Limits: rules ``land.import_*``.
2. **Read** (``read_source``): attribute encoding from the ``.cpg`` when its encoding decodes the DBF records,
   else detected: UTF-8, else GBK, else GB 18030 (its superset, for four-byte characters); a .cpg that does not
   fit the bytes is overruled (named in the report); a GeoJSON that is not UTF-8 is recoded. Archives that
   cannot be inflated (encrypted, unsupported method, corrupt, CRC) are refused as ``bad_archive`` (422).
3. **CRS** (``detect_crs``): the file's declared CRS (``.prj``, GeoPackage, GeoJSON ``crs``) or, without one, the
   coordinates' magnitudes — degrees → EPSG:4490, eastings of 39 xxx xxx m (zone prefix 39) → EPSG:4527, eastings
   under 1 000 000 m → EPSG:4548 — confirmed against Langfang's extent with gis_service.crs (a swapped pair, a
   missing or extra zone prefix is named). Mixed magnitudes are refused as ambiguous.
4. **Validate** (``validate``): fields mapped from NY/T 2539 names (DKBM, SCMJ, HTMJ, DKDZ …) or the layer's own;
   invalid geometry repaired (``make_valid``) when that changes the area by at most
   ``land.import_repair_max_change_pct``, else rejected; multi-part plots rejected; DKBM/CBFBM/FBFBM validated
   with gis_service.land.codes against the county each plot lies in; duplicate DKBM; overlaps within the file
   (``land.overlap_min_m2``); contract vs measured area and geometry vs measured area (warnings). The result is a
   report: errors block the import, warnings do not.
5. **Write** (``commit``): only when the report has no errors. The current data is saved as a version under
   ``var/land_imports/plots/`` (with the database: in it, for every instance) first (``land.import_keep_versions``
   kept), then the layer is replaced through
   ``Store.write`` (a temporary file swapped in: all or nothing) with origin ``imported`` — build-layers never
   overwrites it. ``rollback`` restores the newest saved version (and drops it, so a second rollback goes one
   further back). One import at a time (a lock file, or with the database an advisory lock shared by every
   instance; a second one gets 409). Every plot whose versioned attributes (service.PLOT_EDITABLE) the import
   or rollback changes gets a version valid from that day in the land history: the changes are computed
   first (``history_changes``), the layer is written, then the versions are appended in one short record-store
   transaction (``record_history``) — the write, minutes at two million plots, holds no record-store lock, so
   flood reports and edits go on meanwhile. A failed write leaves no history; failed history puts the saved
   data back. Not versioned: the other fields (measured area, contractor, basic farmland, the
   geometry), plots the file adds (their base holds from their contract start) or drops (gone from the layer).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from .. import crs as crs_mod
from ..catalog import LayerDef
from ..domains import SYSTEM
from ..errors import GisError, shown
from . import checks, codes

PLOTS = "plots"
MB = 1024 * 1024
DATASET_SUFFIXES = {".shp": "shapefile", ".gpkg": "geopackage", ".geojson": "geojson", ".json": "geojson"}
# National (NY/T 2539) names of the register's fields that the layer's labels do not carry.
NATIONAL_ALIASES = {"CBFMC": "contractor_name", "CBFDBXM": "contractor_name", "DBXM": "contractor_name",
                    "ZJHM": "contractor_id_number", "CBFZJHM": "contractor_id_number", "LXDH": "contractor_phone",
                    "HTMJ": "contract_area_mu", "HTZMJ": "contract_area_mu", "SCMJ": "measured_area_mu",
                    "CBQXQ": "contract_start", "CBQXZ": "contract_end", "SFJBNT": "is_basic_farmland",
                    "XZYT": "current_use", "DYZT": "mortgage_status", "LZZT": "transfer_status"}
# 是否基本农田 SFJBNT: NY/T 2539 codes 1 (是) / 2 (否), and the words and flags other tools write.
YES_NO = {"1": True, "2": False, "是": True, "否": False, "y": True, "n": False, "yes": True, "no": False,
          "true": True, "false": False, "t": True, "f": False, "0": False}
# Shapefile field names are cut to 10 characters: "contract_a" stands for contract_area_mu when unambiguous.
SHAPEFILE_NAME_LEN = 10
_CODE_TOKEN = re.compile(r"\b([A-Z]{3,8})$")
ID_FORMAT = "%Y%m%dT%H%M%S%fZ"  # a saved version's id: the UTC time it was saved (fixed width: sorts as text)


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int
    max_unzipped_bytes: int
    max_ratio: float
    ratio_min_bytes: int
    max_members: int

    @classmethod
    def from_rules(cls, rules) -> "Limits":
        return cls(int(rules.value("import_max_upload_mb") * MB), int(rules.value("import_max_unzipped_mb") * MB),
                   float(rules.value("import_max_ratio")), int(rules.value("import_ratio_min_mb") * MB),
                   int(rules.value("import_max_members")))


def too_large(size: int, limit: int) -> GisError:
    return GisError("upload_too_large", f"文件过大（{size / MB:.1f} MB），上限 {limit / MB:.0f} MB",
                    f"the file is too large ({size / MB:.1f} MB); the limit is {limit / MB:.0f} MB", 413)


# --- 1. unpack -------------------------------------------------------------------------------------------
def _unsafe_name(name: str) -> bool:
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    return (norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) is not None or ".." in parts
            or any(p.strip() in ("", ".") for p in parts[:-1]) or "\x00" in norm)


def _refuse_archive(code: str, zh: str, en: str) -> GisError:
    return GisError(code, f"压缩包被拒绝：{zh}", f"archive refused: {en}", 422)


def unpack(path: Path, workdir: Path, limits: Limits) -> Path:
    """The dataset to read: `path` itself, or the one dataset inside a zip archive (extracted safely to workdir)."""
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_upload_bytes:
        raise too_large(size, limits.max_upload_bytes)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":
        if path.suffix.lower() not in DATASET_SUFFIXES and magic[:1] not in (b"{", b"S"):
            raise GisError("unsupported_format", f"不支持的文件 {shown(path.name)}：请提供 Shapefile 压缩包（.zip）、GeoPackage 或 GeoJSON",
                           f"unsupported file {shown(path.name)}: send a zipped Shapefile, a GeoPackage or GeoJSON", 415)
        return path
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise _refuse_archive("bad_archive", "不是有效的 zip 文件", "not a valid zip file") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > limits.max_members:
            raise _refuse_archive("archive_too_many_files", f"含 {len(infos)} 个文件，上限 {limits.max_members}",
                                  f"{len(infos)} files, the limit is {limits.max_members}")
        names = set()
        for info in archive.infolist():
            if _unsafe_name(info.filename):
                raise _refuse_archive("unsafe_archive_path", f"成员路径 {shown(info.filename)} 指向解压目录之外",
                                      f"member path {shown(info.filename)} escapes the extraction directory")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise _refuse_archive("unsafe_archive_path", f"成员 {shown(info.filename)} 是符号链接",
                                      f"member {shown(info.filename)} is a symbolic link")
        total = sum(i.file_size for i in infos)
        if total > limits.max_unzipped_bytes:
            raise _refuse_archive("zip_bomb", f"解压后共 {total / MB:.0f} MB，上限 {limits.max_unzipped_bytes / MB:.0f} MB",
                                  f"{total / MB:.0f} MB uncompressed, the limit is {limits.max_unzipped_bytes / MB:.0f} MB")
        for info in infos:
            _check_ratio(info.filename, info.file_size, info.compress_size, limits)
        out = workdir / "unpacked"
        out.mkdir(parents=True, exist_ok=True)
        written = 0
        for info in infos:
            base = PurePosixPath(info.filename.replace("\\", "/")).name
            if base.startswith(".") or base.startswith("__MACOSX"):
                continue
            if base.lower() in names:
                raise _refuse_archive("archive_duplicate_names", f"含两个同名文件 {shown(base)}", f"two files named {shown(base)}")
            names.add(base.lower())
            member = 0
            try:
                with archive.open(info) as src, open(out / base, "wb") as dst:
                    while chunk := src.read(MB):
                        member += len(chunk)
                        written += len(chunk)
                        if member > info.file_size or written > limits.max_unzipped_bytes:  # the header lied
                            raise _refuse_archive("zip_bomb", "解压出的数据超过压缩包目录所列大小或总量上限",
                                                  "inflated data exceeds the sizes the archive declares or the total limit")
                        _check_ratio(info.filename, member, info.compress_size, limits)
                        dst.write(chunk)
            except GisError:
                (out / base).unlink(missing_ok=True)  # no partial member left behind
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
                (out / base).unlink(missing_ok=True)
                # encrypted (RuntimeError), an unsupported method (NotImplementedError), a corrupt stream or CRC
                raise _refuse_archive("bad_archive", f"成员 {shown(info.filename)} 无法解压（加密、不支持的压缩方式或已损坏）",
                                      f"member {shown(info.filename)} cannot be extracted (encrypted, unsupported "
                                      f"compression or corrupt: {shown(str(exc), 80)})") from None
    found = sorted(p for p in out.iterdir() if p.suffix.lower() in DATASET_SUFFIXES)
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "无 none"
        raise GisError("no_single_dataset", f"压缩包中应恰有一个数据集（.shp/.gpkg/.geojson），实有：{listed}",
                       f"the archive must hold exactly one dataset (.shp/.gpkg/.geojson); found: {listed}", 422)
    return found[0]


def _check_ratio(name: str, size: int, compressed: int, limits: Limits) -> None:
    if size > limits.ratio_min_bytes and size > limits.max_ratio * max(compressed, 1):
        raise _refuse_archive("zip_bomb", f"成员 {shown(name)} 压缩比超过 {limits.max_ratio:g}（疑似压缩炸弹）",
                              f"member {shown(name)} has a compression ratio above {limits.max_ratio:g} (zip bomb)")


# --- 2. read -------------------------------------------------------------------------------------------------
_CPG = {"utf-8": "utf-8", "utf8": "utf-8", "65001": "utf-8", "gbk": "gbk", "cp936": "gbk", "936": "gbk",
        "gb2312": "gbk", "gb18030": "gb18030"}


def detect_encoding(dataset: Path) -> tuple[str, str]:
    """(encoding, how): from the .cpg, else detected from the attribute bytes."""
    kind = DATASET_SUFFIXES.get(dataset.suffix.lower())
    if kind == "geopackage":
        return "utf-8", "GeoPackage 规定为 UTF-8 / UTF-8 by specification"
    how = "无 .cpg，按字节判定 detected (no .cpg)"
    if kind == "shapefile":
        dbf = next((p for p in dataset.parent.glob(dataset.stem + ".*") if p.suffix.lower() == ".dbf"), None)
        if dbf is None:
            raise GisError("incomplete_shapefile", "Shapefile 缺少 .dbf 属性文件", "the Shapefile has no .dbf", 422)
        raw = dbf.read_bytes()
        header = int.from_bytes(raw[8:10], "little") if len(raw) >= 10 else len(raw)
        data = raw[header:]
        cpg = next((p for p in dataset.parent.glob(dataset.stem + ".*") if p.suffix.lower() == ".cpg"), None)
        if cpg is not None:
            declared = cpg.read_bytes().decode("utf-8-sig", errors="replace").strip().lower()
            if declared not in _CPG:
                raise GisError("unknown_encoding", f".cpg 声明的编码 {shown(declared)} 不受支持（支持 UTF-8、GBK）",
                               f"the .cpg declares {shown(declared)}; UTF-8 and GBK are supported", 422)
            try:
                data.decode(_CPG[declared])
                return _CPG[declared], f".cpg 声明 declared in .cpg: {declared}"
            except UnicodeDecodeError:  # the .cpg lies (a GBK file from a tool that always writes UTF-8 …)
                how = f".cpg 声明 {declared} 与属性字节不符，按字节判定 the .cpg ({declared}) does not fit the bytes: detected"
    else:
        data = dataset.read_bytes()
    for encoding in ("utf-8", "gbk", "gb18030"):  # GB 18030 only when its four-byte characters occur
        try:
            data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding, how
    raise GisError("unknown_encoding", "属性既不是 UTF-8 也不是 GBK/GB 18030 编码",
                   "attributes are neither UTF-8 nor GBK/GB 18030", 422)


def read_source(dataset: Path, encoding: str) -> gpd.GeoDataFrame:
    kind = DATASET_SUFFIXES.get(dataset.suffix.lower())
    try:
        if kind == "geojson" and encoding != "utf-8":  # GeoJSON is UTF-8 (RFC 7946): recode a GBK file first
            recoded = dataset.with_name(dataset.stem + ".utf8.geojson")
            recoded.write_text(dataset.read_bytes().decode(encoding), encoding="utf-8")
            dataset = recoded
        options = {"encoding": encoding} if kind == "shapefile" else {}
        frame = pyogrio.read_dataframe(dataset, **options)
    except Exception as exc:  # GDAL reports unreadable files in many ways
        raise GisError("unreadable_file", f"无法读取文件 {shown(dataset.name)}", f"cannot read {shown(dataset.name)}: {exc}",
                       422) from None
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name is None:
        raise GisError("no_geometry", "文件没有几何", "the file has no geometry", 422)
    return frame


# --- 3. CRS ----------------------------------------------------------------------------------------------------
_BY_EPSG = {4490: "cgcs2000", 4326: "wgs84", 4527: "epsg:4527", 4548: "epsg:4548"}
ZONE39 = (39_000_000.0, 40_000_000.0)  # eastings with the zone prefix 39
PLAIN_EASTING = (0.0, 1_000_000.0)  # eastings without prefix (EPSG:4548)
NORTHING = (3_000_000.0, 6_000_000.0)  # northings in northern China


def _between(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    return (values >= bounds[0]) & (values < bounds[1])


def detect_crs(frame: gpd.GeoDataFrame, coord_sys: str | None = None) -> tuple[str, str]:
    """(EPSG code, how it was found) for the frame's coordinates, confirmed to lie in Langfang."""
    coords = shapely.get_coordinates(np.asarray(frame.geometry.values))
    if not len(coords):
        raise GisError("empty_file", "文件没有要素", "the file has no features", 422)
    x, y = coords[:, 0], coords[:, 1]
    degrees = bool((np.abs(x) <= 180).all() and (np.abs(y) <= 90).all())
    declared = frame.crs.to_epsg() if frame.crs is not None else None
    if coord_sys:
        cs = crs_mod.parse_coord_sys(coord_sys)
        if cs.epsg is None:
            raise GisError("bad_coord_sys", "导入不支持 GCJ-02 坐标", "GCJ-02 is not supported for imports", 422)
        epsg, how = cs.epsg, "由调用方指定 given by the caller"
    elif frame.crs is not None and not (frame.crs.is_geographic and not degrees):
        if declared is None:
            raise GisError("unsupported_crs", f"文件的坐标系不受支持：{shown(frame.crs.name, 80)}（支持 EPSG:4527、4548、4490）",
                           f"unsupported CRS {shown(frame.crs.name, 80)} (EPSG:4527, 4548, 4490 are)", 422)
        epsg, how = f"EPSG:{declared}", "文件声明 declared by the file"
    else:  # no CRS, or a geographic default (GeoJSON without crs member) over projected numbers
        epsg, how = _by_magnitude(x, y), "按坐标数值判定 detected from the coordinate magnitudes"
    name = _BY_EPSG.get(int(epsg.split(":")[1]))
    if name is not None:
        crs_mod.to_storage_xy(x, y, name)  # 422 naming the likely mistake (zone prefix, swapped axes …)
    else:
        lon, lat = crs_mod.transform_xy(x, y, epsg, crs_mod.STORAGE_CRS)
        if not crs_mod.inside_langfang(lon, lat).all():
            raise GisError("coordinate_outside_langfang", f"按 {epsg} 换算后坐标不在廊坊市范围内",
                           f"coordinates in {epsg} fall outside Langfang", 422)
    return epsg, how


def _by_magnitude(x: np.ndarray, y: np.ndarray) -> str:
    if ((np.abs(x) <= 180) & (np.abs(y) <= 90)).all():
        return crs_mod.STORAGE_CRS
    north = _between(y, NORTHING)
    zoned, plain = _between(x, ZONE39) & north, _between(x, PLAIN_EASTING) & north
    if zoned.all():
        return crs_mod.ZONED_CRS
    if plain.all():
        return crs_mod.METRIC_CRS
    if (zoned | plain).all():
        raise GisError("ambiguous_crs", f"坐标系无法判定：{int(zoned.sum())} 个坐标带 39 带号，{int(plain.sum())} 个没有；"
                       "请统一带号或用 coord_sys 指定",
                       f"ambiguous CRS: {int(zoned.sum())} coordinates carry the zone prefix 39 and {int(plain.sum())} "
                       "do not; make them consistent or state coord_sys", 422)
    if (_between(y, ZONE39) | _between(y, PLAIN_EASTING)).any() and _between(x, NORTHING).any():
        raise GisError("ambiguous_crs", "坐标系无法判定：东、北坐标似乎颠倒（x 应为东坐标）",
                       "cannot determine the CRS: easting and northing look swapped (x must be the easting)", 422)
    raise GisError("missing_crs", "文件没有坐标系信息（缺 .prj），坐标数值也不像 EPSG:4490/4527/4548；请用 coord_sys 指定",
                   "the file has no CRS (.prj missing) and the numbers fit neither EPSG:4490, 4527 nor 4548; "
                   "state coord_sys", 422)


# --- 4. validate --------------------------------------------------------------------------------------------
@dataclass
class Issue:
    severity: str  # error | warning
    code: str
    message_zh: str
    message_en: str
    count: int = 0
    examples: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "message": f"{self.message_zh} / {self.message_en}",
                "count": self.count, "examples": self.examples}


@dataclass
class Report:
    source: str
    encoding: str = ""
    encoding_how: str = ""
    crs: str = ""
    crs_how: str = ""
    features: int = 0
    fields: dict = field(default_factory=dict)  # layer field <- source column
    issues: list[Issue] = field(default_factory=list)
    examples_max: int = 20

    def add(self, severity: str, code: str, zh: str, en: str, examples=()) -> None:
        examples = list(examples)
        if examples or code.startswith("field_"):  # field-level findings carry no examples
            self.issues.append(Issue(severity, code, zh, en, len(examples), examples[:self.examples_max]))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {"source": self.source, "ok": self.ok, "features": self.features, "encoding": self.encoding,
                "encoding_detection": self.encoding_how, "crs": self.crs, "crs_detection": self.crs_how,
                "field_mapping": self.fields, "errors": [i.as_dict() for i in self.errors],
                "warnings": [i.as_dict() for i in self.issues if i.severity == "warning"]}


def map_fields(frame: pd.DataFrame, layer: LayerDef) -> dict[str, str]:
    """layer field -> source column: the field's own name, its NY/T 2539 code (label), an alias, or the
    Shapefile-truncated name; case-insensitive."""
    columns = {c.lower(): c for c in frame.columns if c != frame.geometry.name}
    found = {}
    for f in layer.fields:
        token = _CODE_TOKEN.search(f.label or "")
        keys = [f.name, f.name[:SHAPEFILE_NAME_LEN]] + ([token.group(1)] if token else [])
        keys += [code for code, name in NATIONAL_ALIASES.items() if name == f.name]
        hit = next((columns[k.lower()] for k in keys if k.lower() in columns), None)
        if hit is not None:
            found[f.name] = hit
    return found


def _as_polygons(geoms: np.ndarray, max_change: float, report: Report, labels: np.ndarray) -> np.ndarray:
    """Single polygons (2D): invalid ones repaired within max_change of their area, else reported as errors."""
    geoms = shapely.force_2d(geoms)
    out = geoms.copy()
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    report.add("error", "empty_geometry", "几何为空", "empty geometry", labels[missing])
    ok = ~missing
    kind = shapely.get_type_id(geoms)
    single_multi = ok & (kind == 6) & (shapely.get_num_geometries(geoms) == 1)
    out[single_multi] = shapely.get_geometry(geoms[single_multi], 0)
    wrong = ok & ~np.isin(shapely.get_type_id(out), [3])
    report.add("error", "not_a_polygon", "不是单个多边形（多部件或点线）；一个地块应为一个面",
               "not a single polygon (multi-part, point or line); a plot is one polygon", labels[wrong])
    invalid = ok & ~wrong & ~shapely.is_valid(out)
    repaired, rejected = [], []
    for i in np.flatnonzero(invalid):
        before = shapely.area(out[i])
        fixed = shapely.make_valid(out[i])
        polys = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in ("Polygon", "MultiPolygon")]
        fixed = shapely.union_all(polys) if polys else None
        change = abs(shapely.area(fixed) - before) / before if fixed is not None and before > 0 else np.inf
        if fixed is not None and fixed.geom_type == "Polygon" and change <= max_change:
            out[i] = fixed
            repaired.append(f"{labels[i]}（{shapely.is_valid_reason(geoms[i])}）")
        else:
            rejected.append(f"{labels[i]}（{shapely.is_valid_reason(geoms[i])}）")
    report.add("warning", "geometry_repaired", "无效几何已自动修复（面积变化在限值内）",
               "invalid geometry repaired (area change within the limit)", repaired)
    report.add("error", "geometry_rejected", "无效几何无法在限值内修复，已拒绝",
               "invalid geometry that cannot be repaired within the limit: rejected", rejected)
    return out


def _located_county(geoms_m: np.ndarray, counties: gpd.GeoDataFrame | None) -> np.ndarray:
    from shapely import STRtree

    adcode = np.full(len(geoms_m), None, dtype=object)
    if counties is None or not len(geoms_m):
        return adcode
    points = shapely.point_on_surface(geoms_m)
    pi, ci = STRtree(np.asarray(counties.geometry.values)).query(points, predicate="within")
    adcode[pi] = counties["adcode"].astype(int).astype(str).to_numpy()[ci]
    return adcode


def _yes_no(values: np.ndarray) -> tuple[pd.api.extensions.ExtensionArray, list]:
    """(booleans, [(index, value) not understood]); empty stays empty."""
    out, unknown = [], []
    for i, v in enumerate(values):
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            out.append(None)
            continue
        key = str(v).strip().lower()
        key = key[:-2] if key.endswith(".0") else key  # a code read as a number (1.0)
        if key in YES_NO:
            out.append(YES_NO[key])
        else:
            out.append(None)
            unknown.append((i, v))
    return pd.array(out, dtype="boolean"), unknown  # positional: the frame may have any index


def validate(frame: gpd.GeoDataFrame, layer: LayerDef, rules, counties: gpd.GeoDataFrame | None,
             report: Report) -> gpd.GeoDataFrame:
    """The frame conformed to the layer (EPSG:4490), with every finding in the report."""
    report.features = len(frame)
    mapping = map_fields(frame, layer)
    report.fields = mapping
    if "dkbm" not in mapping:
        report.add("error", "field_missing_dkbm", "缺少地块编码字段 DKBM", "the plot code field DKBM is missing")
        return frame
    data = pd.DataFrame({name: frame[src].to_numpy() for name, src in mapping.items()}, index=frame.index)
    dkbm = data["dkbm"].astype(object).map(lambda v: None if v is None or v != v else str(v).strip()).to_numpy()
    labels = np.array([d or f"#{i + 1}" for i, d in enumerate(dkbm)], dtype=object)
    if "is_basic_farmland" in data:
        data["is_basic_farmland"], unknown = _yes_no(data["is_basic_farmland"].to_numpy())
        report.add("error", "bad_sfjbnt", "是否基本农田 SFJBNT 不是 1（是）/2（否）", "SFJBNT is neither 1 (yes) nor 2 (no)",
                   [f"{labels[i]}：{shown(str(v), 20)}" for i, v in unknown])
    geoms = _as_polygons(np.asarray(frame.geometry.values, dtype=object),
                         rules.value("import_repair_max_change_pct") / 100, report, labels)
    metric = gpd.GeoSeries(geoms, crs=frame.crs).to_crs(crs_mod.METRIC_CRS).values
    usable = ~(shapely.is_missing(metric) | shapely.is_empty(metric))
    county = _located_county(np.where(usable, metric, None), counties)
    if counties is None:
        report.add("warning", "field_county_unchecked", "县区图层未构建，未核对编码中的县代码",
                   "the counties layer is not built: county codes not checked")
    report.add("error", "outside_counties", "地块不在廊坊任何县区内", "plot lies in no county of Langfang",
               labels[usable & pd.isna(county)] if counties is not None else [])
    # codes
    bad_dkbm, bad_cbfbm = [], []
    for i, code in enumerate(dkbm):
        try:
            codes.validate_dkbm(code, county_adcode=county[i])
        except GisError as exc:
            bad_dkbm.append(f"{labels[i]}：{exc.message_zh}")
    report.add("error", "malformed_dkbm", "地块编码 DKBM 格式错误或与所在县不符",
               "DKBM malformed or not of the county the plot lies in", bad_dkbm)
    fbfbm = np.array([codes.fbfbm_of(c) if c else None for c in dkbm], dtype=object)
    if "fbfbm" in data:
        given = data["fbfbm"].astype(object).map(lambda v: None if v is None or v != v else str(v).strip()).to_numpy()
        differs = [labels[i] for i in range(len(dkbm)) if given[i] and fbfbm[i] and given[i] != fbfbm[i]]
        report.add("error", "fbfbm_not_in_dkbm", "发包方编码 FBFBM 与地块编码前 14 位不一致",
                   "FBFBM differs from the first 14 digits of the DKBM", differs)
    if "cbfbm" in data:
        for i, code in enumerate(data["cbfbm"].to_numpy()):
            if code is None or code != code:
                continue
            try:
                codes.validate_cbfbm(str(code), fbfbm=fbfbm[i], county_adcode=county[i])
            except GisError as exc:
                bad_cbfbm.append(f"{labels[i]}：{exc.message_zh}")
        report.add("error", "malformed_cbfbm", "承包方编码 CBFBM 格式错误", "CBFBM malformed", bad_cbfbm)
    counts = pd.Series(dkbm).value_counts()
    report.add("error", "duplicate_dkbm", "地块编码重复", "duplicate DKBM", sorted(counts[counts > 1].index))
    # fields the file lacks
    data["dkbm"], data["fbfbm"] = dkbm, fbfbm
    data["county_adcode"] = pd.array([int(c) if c else None for c in county], dtype="Int64")
    if "village_code" not in mapping:
        data["village_code"] = [f[:12] if f else None for f in fbfbm]
    mu_per_m2 = rules.value("mu_per_square_metre")
    geometric_mu = shapely.area(metric) * mu_per_m2
    if "measured_area_mu" not in mapping:
        data["measured_area_mu"] = np.round(geometric_mu, 2)
        report.add("warning", "field_measured_area_computed", "缺少实测面积 SCMJ，按几何面积计算",
                   "no measured area (SCMJ): computed from the geometry")
    data["demo"] = False
    derived = {"dkbm", "fbfbm", "county_adcode", "village_code", "measured_area_mu", "demo"}
    for f in layer.fields:
        if f.name not in data:
            data[f.name] = None
            if f.name not in derived:
                report.add("warning", f"field_missing_{f.name}", f"文件没有字段 {f.label}，留空",
                           f"the file has no field {f.name}: left empty")
    # areas
    if "contract_area_mu" in mapping and "measured_area_mu" in mapping:
        mismatch = checks.area_mismatch(data, rules.value("area_mismatch_pct"))
        report.add("warning", "area_mismatch", f"实测面积与合同面积相差超过 {rules.value('area_mismatch_pct')}%",
                   f"measured and contract area differ by more than {rules.value('area_mismatch_pct')}%",
                   [f"{r.dkbm}：{r.measured_area_mu} / {r.contract_area_mu} 亩" for r in mismatch.itertuples()])
    measured = pd.to_numeric(data["measured_area_mu"], errors="coerce").to_numpy(dtype=float)
    tol = rules.value("import_area_tolerance_pct") / 100
    with np.errstate(divide="ignore", invalid="ignore"):
        off = usable & (np.abs(geometric_mu - measured) > tol * measured + 1e-9)
    report.add("warning", "geometry_area_mismatch",
               f"几何面积与登记实测面积 SCMJ 相差超过 {rules.value('import_area_tolerance_pct')}%",
               f"geometry area differs from the recorded measured area by more than {rules.value('import_area_tolerance_pct')}%",
               [f"{labels[i]}：{geometric_mu[i]:.2f} / {measured[i]} 亩" for i in np.flatnonzero(off)])
    # overlaps within the file
    valid = usable & shapely.is_valid(metric) & (shapely.get_type_id(metric) == 3)
    plots_m = gpd.GeoDataFrame({"dkbm": labels[valid]}, geometry=metric[valid], crs=crs_mod.METRIC_CRS)
    over = checks.overlaps(plots_m, rules.value("overlap_min_m2"), mu_per_m2)
    report.add("error", "overlap", f"地块相互重叠（超过 {rules.value('overlap_min_m2')} 平方米）",
               f"plots overlap (more than {rules.value('overlap_min_m2')} m²)",
               [f"{r.dkbm} × {r.other_dkbm}：{r.overlap_m2} m²" for r in over.itertuples()])
    return gpd.GeoDataFrame(data[[f.name for f in layer.fields]], geometry=list(geoms), crs=frame.crs)


# --- the whole check, then write ---------------------------------------------------------------------------
def prepare(path: Path, layer: LayerDef, rules, counties: gpd.GeoDataFrame | None, workdir: Path,
            coord_sys: str | None = None, source_name: str | None = None, current: pd.Series | None = None,
            replace_all: bool = False) -> tuple[Report, gpd.GeoDataFrame | None]:
    """Unpack, read, detect and validate; nothing is written. (report, conformed frame or None on errors).

    ``current``: the county codes of the plots in the layer now. The import replaces the whole layer, so
    counties that have plots now and none in the file would lose them: an error unless ``replace_all``."""
    report = Report(source_name or Path(path).name, examples_max=int(rules.value("import_report_examples")))
    dataset = unpack(Path(path), workdir, Limits.from_rules(rules))
    report.encoding, report.encoding_how = detect_encoding(dataset)
    frame = read_source(dataset, report.encoding)
    report.crs, report.crs_how = detect_crs(frame, coord_sys)
    frame = frame.set_crs(report.crs, allow_override=True)
    clean = validate(frame, layer, rules, counties, report)
    if current is not None and len(current) and "county_adcode" in clean:
        kept = set(pd.to_numeric(clean["county_adcode"], errors="coerce").dropna().astype(int))
        now = pd.to_numeric(current, errors="coerce").dropna().astype(int).value_counts()
        dropped = [f"{code}：{count} 块" for code, count in now.items() if code not in kept]
        report.add("warning" if replace_all else "error", "counties_dropped",
                   "文件不含这些县区现有的地块，导入会删除它们（整层替换；确需如此请加 replace_all）",
                   "the file has no plots of these counties, which the import would delete (the whole layer is "
                   "replaced; pass replace_all if that is intended)", dropped)
    if not report.ok:
        return report, None
    from ..store.gpkg import conform  # the store's own check: types and geometry as it will write them

    return report, conform(layer, clean)


class Versions:
    """Saved previous versions of a layer (var/land_imports/<layer>/), newest last, and the import lock: a file
    lock, or with the database a session advisory lock, so that one import or rollback runs at a time on
    every instance. With the database the saved versions are in it too (DatabaseVersions)."""

    def __init__(self, settings, layer: LayerDef, keep: int, store):
        self.dir = Path(settings.var_dir) / "land_imports" / layer.id
        self.database_url = settings.database_url
        self.layer, self.keep, self.store = layer, keep, store

    @contextmanager
    def lock(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.database_url:
            with self._database_lock():
                yield
            return
        with open(self.dir / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _busy() from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextmanager
    def _database_lock(self):
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:  # its own session: held until closed
            # A machine that dies mid-import frees the lock when the server notices the session is gone: after
            # 30 s idle + 3 × 10 s unanswered keepalives, not the system default of about two hours.
            for setting, seconds in (("idle", 30), ("interval", 10), ("count", 3)):
                conn.execute(f"SET tcp_keepalives_{setting} = {seconds}")
            key = f"land.import:{self.layer.id}"
            if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
                raise _busy()
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
                except psycopg.OperationalError:  # the session ended (and its lock with it): what ran is done
                    logging.getLogger("gis_service").warning("land import lock: its connection was lost during "
                                                             "the import or rollback of %s", self.layer.id)

    def list(self) -> list[dict]:
        if not self.dir.exists():
            return []
        out = [json.loads(p.read_text(encoding="utf-8")) for p in self.dir.glob("*.json")]
        return sorted(out, key=lambda m: m["id"])

    def _now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)

    def _describe(self, frame: gpd.GeoDataFrame, note: str) -> dict:
        """The new version's description; its id (the time, which orders the versions) is after every listed
        one even when the clock that gives it went back (called under the lock)."""
        now, listed = self._now(), self.list()
        if listed:
            newest = dt.datetime.strptime(listed[-1]["id"], ID_FORMAT).replace(tzinfo=dt.timezone.utc)
            now = max(now, newest + dt.timedelta(microseconds=1))
        return {"id": now.strftime(ID_FORMAT), "saved_at": now.isoformat(timespec="seconds"),
                "origin": self.store.origin(self.layer), "features": len(frame), "replaced_by": note}

    def save(self, note: str) -> dict | None:
        if not self.store.exists(self.layer):
            return None
        frame = self.store.read_frame(self.layer)
        meta = self._describe(frame, note)
        tmp = self.dir / f".{meta['id']}.tmp.gpkg"
        pyogrio.write_dataframe(frame, tmp, layer=self.layer.id, driver="GPKG")
        os.replace(tmp, self.dir / f"{meta['id']}.gpkg")
        (self.dir / f"{meta['id']}.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        return meta

    def drop(self, meta: dict) -> None:
        for suffix in (".json", ".gpkg"):
            (self.dir / f"{meta['id']}{suffix}").unlink(missing_ok=True)

    def prune(self) -> None:
        for meta in self.list()[:-self.keep]:
            self.drop(meta)

    def read(self, meta: dict) -> gpd.GeoDataFrame:
        frame = pyogrio.read_dataframe(self.dir / f"{meta['id']}.gpkg", layer=self.layer.id)
        return frame.set_crs(crs_mod.STORAGE_CRS, allow_override=True)


class DatabaseVersions(Versions):
    """With the database, every instance can list and roll back what any instance saved: a saved version is a
    table written and read through the Store (layer id ``<layer>__saved_<id>``, never in the catalog) and its
    description a row of ``land_imports.versions``."""

    SCHEMA = "land_imports"

    def _connect(self):
        import psycopg

        conn = psycopg.connect(self.database_url, autocommit=True)
        if conn.execute(f"SELECT to_regclass('{self.SCHEMA}.versions')").fetchone()[0] is None:
            with conn.transaction():  # one at a time: concurrent CREATE … IF NOT EXISTS collide (pg_type's key)
                conn.execute(f"SELECT pg_advisory_xact_lock(hashtext('{self.SCHEMA}.versions'))")
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.SCHEMA}")
                conn.execute(f"CREATE TABLE IF NOT EXISTS {self.SCHEMA}.versions (layer_id text NOT NULL, "
                             "id text NOT NULL, meta json NOT NULL, PRIMARY KEY (layer_id, id))")
        return conn

    def _copy(self, meta: dict) -> LayerDef:
        return dataclasses.replace(self.layer, id=f"{self.layer.id}__saved_{meta['id'].lower()}")

    # a version is listed once its table is written (its row in gis.layer_meta): the row comes first, so that
    # no saved table is ever without its row — an interrupted save leaves a row without a table, unlisted, and
    # removed by the next save (_tidy)
    _SAVED = "%s || '__saved_' || lower(v.id)"

    def _now(self) -> dt.datetime:  # the database's clock, the same for every instance (theirs may differ)
        with self._connect() as conn:
            return conn.execute("SELECT clock_timestamp()").fetchone()[0].astimezone(dt.timezone.utc)

    def list(self) -> list[dict]:
        with self._connect() as conn:
            rows = conn.execute(f"SELECT v.meta FROM {self.SCHEMA}.versions v JOIN gis.layer_meta m "
                                f"ON m.layer_id = {self._SAVED % 'v.layer_id'} WHERE v.layer_id = %s ORDER BY v.id",
                                (self.layer.id,)).fetchall()
        return [r[0] for r in rows]

    def _tidy(self, conn) -> None:
        """What an interrupted save left (under the lock, so no save is in progress): rows without a table,
        and saved tables of this layer without a row."""
        from psycopg import sql as pgsql

        from ..store.postgis import SCHEMA

        prefix = f"{self.layer.id}__saved_"
        with conn.transaction():
            conn.execute(f"DELETE FROM {self.SCHEMA}.versions v WHERE v.layer_id = %s AND NOT EXISTS "
                         f"(SELECT 1 FROM gis.layer_meta m WHERE m.layer_id = {self._SAVED % 'v.layer_id'})",
                         (self.layer.id,))
            orphans = conn.execute(
                f"SELECT m.layer_id FROM gis.layer_meta m WHERE left(m.layer_id, %s) = %s AND NOT EXISTS "
                f"(SELECT 1 FROM {self.SCHEMA}.versions v WHERE v.layer_id = %s "
                f"AND m.layer_id = {self._SAVED % 'v.layer_id'})",
                (len(prefix), prefix, self.layer.id)).fetchall()
            for (name,) in orphans:
                conn.execute(pgsql.SQL("DROP TABLE IF EXISTS {}.{}").format(pgsql.Identifier(SCHEMA),
                                                                            pgsql.Identifier(name)))
                conn.execute("DELETE FROM gis.layer_meta WHERE layer_id = %s", (name,))

    def save(self, note: str) -> dict | None:
        if not self.store.exists(self.layer):
            return None
        with self._connect() as conn:
            self._tidy(conn)
        frame = self.store.read_frame(self.layer)
        meta = self._describe(frame, note)
        with self._connect() as conn:
            conn.execute(f"INSERT INTO {self.SCHEMA}.versions (layer_id, id, meta) VALUES (%s, %s, %s)",
                         (self.layer.id, meta["id"], json.dumps(meta, ensure_ascii=False)))
        try:
            self.store.write(self._copy(meta), frame, origin=meta["origin"] or "imported")
        except BaseException:
            self.drop(meta)
            raise
        return meta

    def drop(self, meta: dict) -> None:
        from ..store.postgis import table

        copy = self._copy(meta)
        with self._connect() as conn, conn.transaction():
            conn.execute(f"DELETE FROM {self.SCHEMA}.versions WHERE layer_id = %s AND id = %s",
                         (self.layer.id, meta["id"]))
            conn.execute(f"DROP TABLE IF EXISTS {table(copy.id)}")
            conn.execute("DELETE FROM gis.layer_meta WHERE layer_id = %s", (copy.id,))

    def read(self, meta: dict) -> gpd.GeoDataFrame:
        return self.store.read_frame(self._copy(meta))


def versions_for(ctx, layer: LayerDef, keep: int) -> Versions:
    """The saved versions where the settings put the data: files under var/, or the database."""
    kind = DatabaseVersions if ctx.settings.database_url else Versions
    return kind(ctx.settings, layer, keep, ctx.store)


def _busy() -> GisError:
    return GisError("import_busy", "另一个导入或回退正在进行，请稍后再试",
                    "another import or rollback is running; try again shortly", 409)


def commit(store, layer: LayerDef, frame: gpd.GeoDataFrame, versions: Versions, note: str, then=None) -> dict:
    """Save the current data as a version, replace the layer (atomic), then run `then` (the history's short
    transaction). If the write fails nothing changed; if `then` fails the saved data is put back."""
    saved = versions.save(note)
    try:
        count = store.write(layer, frame, origin="imported")
    except BaseException:
        if saved is not None:
            versions.drop(saved)
        raise
    _then_or_restore(store, layer, versions, saved, then)
    versions.prune()
    return {"written": count, "previous_version": saved}


def rollback(store, layer: LayerDef, versions: Versions, then=None) -> dict:
    """Restore the newest saved version (with its origin) and drop it from the list; then run `then`."""
    saved = versions.list()
    if not saved:
        raise GisError("no_previous_version", "没有可回退的历史版本", "there is no previous version to restore", 409)
    meta = saved[-1]
    current = versions.save(f"回退前 before rollback to {meta['saved_at']}") if then is not None else None
    try:
        count = store.write(layer, versions.read(meta), origin=meta["origin"] or "imported")
    except BaseException:  # the layer is unchanged: its copy is no version to roll back to
        if current is not None:
            versions.drop(current)
        raise
    _then_or_restore(store, layer, versions, current, then)
    if current is not None:
        versions.drop(current)
    versions.drop(meta)
    return {"restored": meta, "features": count}


def _then_or_restore(store, layer: LayerDef, versions: Versions, saved: dict | None, then) -> None:
    if then is None:
        return
    try:
        then()
    except BaseException:
        if saved is not None:
            store.write(layer, versions.read(saved), origin=saved["origin"] or "imported")
            versions.drop(saved)
        raise


def _history_values(frame: pd.DataFrame, fields: list[str]) -> dict[str, dict]:
    """{dkbm: {field: JSON value}} of the versioned plot fields (NaN → None, numbers as Python floats)."""
    def plain(v):
        if v is None or (isinstance(v, float) and v != v) or v is pd.NA or v is pd.NaT:
            return None
        return round(float(v), 4) if isinstance(v, (float, np.floating)) else v.item() if hasattr(v, "item") else v
    columns = [f for f in fields if f in frame]
    return {str(row[0]): {f: plain(v) for f, v in zip(columns, row[1:])}
            for row in frame[["dkbm", *columns]].itertuples(index=False, name=None) if row[0]}


def history_changes(old: pd.DataFrame | None, new: pd.DataFrame) -> list[dict]:
    """The plots whose versioned attributes (service.PLOT_EDITABLE) the new data change, with their previous
    values: computed before the history's transaction, which then only appends (record_history)."""
    from .service import PLOT_EDITABLE

    if old is None or not len(old):
        return []
    fields = list(PLOT_EDITABLE)
    before, after = _history_values(old, [*fields, "village_code", "contract_start"]), _history_values(new, fields)
    changes = []
    for dkbm, values in after.items():
        prior = before.get(dkbm)
        if prior is None:
            continue
        diff = {f: v for f, v in values.items() if prior.get(f) != v}
        if diff:
            changes.append({"dkbm": dkbm, "village": prior.get("village_code") or dkbm[:12],
                            "base": {f: prior.get(f) for f in fields}, "diff": diff,
                            "contract_start": str(prior.get("contract_start") or "")[:10]})
    return changes


def record_history(history, changes: list[dict], who, reason: str) -> int:
    """Each changed plot (history_changes) gets a version valid from today in the land history (history.py), so
    the plot's history shows the change and reading it as of an earlier date gives the previous values. A plot
    without versions first gets one holding its previous values from its contract start (before it the layer,
    now the new data, would answer). history: a History (built outside the transaction: it creates its table),
    called inside records.transaction(); returns the number of plots changed."""
    from .history import today

    if history is None:
        return 0
    day = today()
    for change in changes:
        dkbm, village, base = change["dkbm"], change["village"], change["base"]
        versions = history.versions("plot", dkbm)
        if not versions:
            start = change["contract_start"]
            start = start if len(start) == 10 and start <= day else day
            history.append("plot", dkbm, dkbm, village, base, {}, start, who, f"{reason}：此前的数据 previous data")
        when = max(day, versions[-1]["valid_from"]) if versions else day  # history is appended, never rewritten
        history.append("plot", dkbm, dkbm, village, base, change["diff"], when, who, reason)
    return len(changes)


def workdir_for(var_dir: Path) -> Path:
    """A fresh scratch directory for one import (removed by the caller with shutil.rmtree)."""
    base = Path(var_dir) / "land_imports" / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"{os.getpid()}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%f')}"
    path.mkdir()
    return path


def run_import(ctx, path: Path, *, dry_run: bool, coord_sys: str | None = None, source_name: str | None = None,
               refresh=None, replace_all: bool = False, who=SYSTEM) -> dict:
    """The whole import for a domain context: report, and (when not a dry run and no errors) write + refresh."""
    layer = ctx.catalog.get(PLOTS)
    if layer is None:
        raise GisError("layer_not_available", "图层 plots 未定义", "layer 'plots' is not defined", 503)
    counties = _counties(ctx)
    current = ctx.frame(PLOTS, crs_mod.STORAGE_CRS, SYSTEM)["county_adcode"] if ctx.store.exists(layer) else None
    work = workdir_for(ctx.settings.var_dir)
    try:
        report, frame = prepare(path, layer, ctx.rules, counties, work, coord_sys, source_name, current, replace_all)
        result = {"report": report.as_dict(), "dry_run": dry_run, "written": 0}
        if dry_run:
            return result
        if frame is None:
            raise ImportRefused(result)
        versions = versions_for(ctx, layer, int(ctx.rules.value("import_keep_versions")))
        history = _history(ctx)
        with versions.lock():
            old = ctx.store.read_frame(layer) if ctx.store.exists(layer) else None
            changes = history_changes(old, frame)
            result["history_changed"] = len(changes)
            result.update(commit(ctx.store, layer, frame, versions, report.source, then=_recorder(
                ctx, history, changes, who, f"导入 import {report.source}")))
        result["version"] = ctx.store.version(layer)
        result["refreshed"] = refresh() if refresh else []
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


class ImportRefused(GisError):
    """The report has errors: nothing was written (422 with the report)."""

    def __init__(self, result: dict):
        n = len(result["report"]["errors"])
        super().__init__("import_refused", f"校验发现 {n} 类错误，未写入任何数据", f"validation found {n} kinds of error; "
                         "nothing was written", 422)
        self.result = result

    def body(self) -> dict:
        return {**super().body(), **self.result}


def _history(ctx):
    from .history import History

    return History(ctx.records) if ctx.records is not None else None


def _recorder(ctx, history, changes: list[dict], who, reason: str):
    """The history's versions for a written layer, in one short record-store transaction: the layer's write
    (minutes at two million plots) holds no record-store lock, so flood reports and edits go on meanwhile."""
    if ctx.records is None or not changes:
        return None

    def record():
        with ctx.records.transaction():
            record_history(history, changes, who, reason)
    return record


def run_rollback(ctx, refresh=None, who=SYSTEM) -> dict:
    layer = ctx.catalog.get(PLOTS)
    versions = versions_for(ctx, layer, int(ctx.rules.value("import_keep_versions")))
    history = _history(ctx)
    with versions.lock():
        saved = versions.list()
        changes = (history_changes(ctx.store.read_frame(layer), versions.read(saved[-1]))
                   if saved and ctx.store.exists(layer) else [])
        reason = f"回退 rollback to {saved[-1]['saved_at']}" if saved else ""
        result = rollback(ctx.store, layer, versions, then=_recorder(ctx, history, changes, who, reason))
        result["history_changed"] = len(changes)
    result["version"] = ctx.store.version(layer)
    result["refreshed"] = refresh() if refresh else []
    return result


def _counties(ctx) -> gpd.GeoDataFrame | None:
    try:
        return ctx.frame("counties")
    except GisError as exc:
        if exc.code in ("layer_not_available", "layer_not_built", "not_found"):
            return None
        raise


# --- command line: gis-service land import FILE | --rollback (Domain.commands) ----------------------------
def add_commands(parser) -> None:
    sub = parser.add_subparsers(dest="land_command", required=True)
    s = sub.add_parser("import", help="导入地块数据（先校验，无错误才写入；可回退） import plots (validated, atomic, reversible)")
    s.add_argument("file", nargs="?", help="Shapefile 压缩包（.zip）、.shp、GeoPackage 或 GeoJSON")
    s.add_argument("--dry-run", action="store_true", help="只校验并打印报告，不写入 validate and report only")
    s.add_argument("--coord-sys", help="文件无坐标系时指定 when the file has no CRS: cgcs2000|epsg:4527|epsg:4548")
    s.add_argument("--rollback", action="store_true", help="回退到上一次导入前的数据 restore the data before the last import")
    s.add_argument("--json", action="store_true", help="以 JSON 打印完整报告 print the full report as JSON")
    s.add_argument("--replace-all", action="store_true",
                   help="文件不含某些县区时仍整层替换（删除这些县区的地块） replace the whole layer even if counties are missing")
    s.set_defaults(run=_cli_import)


def _cli_import(args, ctx, refresh) -> None:
    if args.rollback:
        if args.file:
            raise GisError("bad_parameter", "--rollback 不带文件", "--rollback takes no file", 400)
        result = run_rollback(ctx, refresh, who=_cli_principal())
        meta = result["restored"]
        print(f"已回退到 {meta['saved_at']} 的数据（{meta['features']} 块，来源 {meta['origin']}） "
              f"restored the version saved at {meta['saved_at']}")
        return
    if not args.file:
        raise GisError("bad_parameter", "请给出要导入的文件或 --rollback", "give a file to import or --rollback", 400)
    try:
        result = run_import(ctx, Path(args.file), dry_run=args.dry_run, coord_sys=args.coord_sys, refresh=refresh,
                            replace_all=args.replace_all, who=_cli_principal())
    except ImportRefused as exc:
        _print_report(exc.result["report"], args.json)
        raise
    _print_report(result["report"], args.json)
    if args.dry_run:
        print("校验完成，未写入（--dry-run） validated; nothing written")
    else:
        print(f"已导入 {result['written']} 块地 imported {result['written']} plots；"
              "可用 gis-service land import --rollback 回退 (reversible)")
        if result["refreshed"]:
            print(f"已更新派生图层 refreshed derived layers: {', '.join(result['refreshed'])}")


def _cli_principal():
    import getpass

    from ..auth import Principal

    return Principal(f"cli:{getpass.getuser()}", "admin")  # the operator at the server's console


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    print(f"{report['source']}：{report['features']} 个要素，编码 {report['encoding']}（{report['encoding_detection']}），"
          f"坐标系 {report['crs']}（{report['crs_detection']}）")
    for severity, items in (("错误 error", report["errors"]), ("警告 warning", report["warnings"])):
        for item in items:
            shown_examples = "；".join(str(e) for e in item["examples"][:5])
            print(f"  {severity} [{item['code']}] {item['message']}" + (f"：{item['count']} 处，如 {shown_examples}"
                                                                          if item["count"] else ""))
