"""Plot import: GBK and zone-prefix Shapefiles, CRS detection, validation report, zip bombs and traversal,
an import failing half-way (previous data intact) and rollback."""

import io
import shutil
import sqlite3
import warnings
import zipfile

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from gis_service.catalog import Catalog
from gis_service.config import REPO_ROOT, Settings
from gis_service.domains import DomainContext
from gis_service.errors import GisError
from gis_service.land import imports
from gis_service.land.history import VERSIONS, History
from gis_service.rules import RuleBook
from gis_service.store import GeoPackageStore

NATIONAL = {"dkbm": "DKBM", "dkmc": "DKMC", "fbfbm": "FBFBM", "cbfbm": "CBFBM", "contractor_name": "CBFMC",
            "contract_area_mu": "HTMJ", "measured_area_mu": "SCMJ", "is_basic_farmland": "SFJBNT"}


def sample_plots(catalog, store, n=40):
    """n adjoining plots of one 发包方 from the built demo layer, with every field the definition lists."""
    frame = store.read_frame(catalog.get("plots"))
    first = frame["fbfbm"].iloc[0]
    frame = frame[frame["fbfbm"] == first].head(n).reset_index(drop=True)
    for f in catalog.get("plots").fields:
        if f.name not in frame:
            frame[f.name] = None
    return frame


@pytest.fixture()
def ctx(tmp_path, catalog, store):
    layers = tmp_path / "layers"
    (layers / "land").mkdir(parents=True)
    (layers / "admin").mkdir()
    shutil.copy(REPO_ROOT / "layers" / "groups.toml", layers)
    shutil.copy(catalog.get("plots").path, layers / "land")
    counties = catalog.get("counties")
    shutil.copy(counties.path, layers / "admin")
    shutil.copy(counties.data_path, layers / "admin")
    own = Catalog.load(layers)
    own_store = GeoPackageStore()
    own_store.write(own.get("plots"), sample_plots(catalog, store), origin="demo")
    settings = Settings(layers_dir=layers, var_dir=tmp_path / "var")
    return DomainContext(settings, own, own_store, None, RuleBook.load().domain("land"), None)


def national_frame(plots, crs="EPSG:4527"):
    out = pd.DataFrame({code: plots[name].to_numpy() for name, code in NATIONAL.items()})
    out["HTMJ"] = plots["measured_area_mu"].to_numpy()  # contract = measured: no area warnings
    out["CBFMC"] = [f"张{'三四五六七八九十'[i % 8]}丰" for i in range(len(out))]
    out["DKDZ"] = "机耕路"
    return gpd.GeoDataFrame(out, geometry=plots.geometry.values, crs="EPSG:4490").to_crs(crs)


def write_shapefile(frame, folder, encoding="GBK", keep_cpg=False, keep_prj=True):
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # a frame without CRS (no .prj) is wanted here
        warnings.simplefilter("ignore", UserWarning)
        pyogrio.write_dataframe(frame, folder / "dk.shp", driver="ESRI Shapefile", encoding=encoding)
    if not keep_cpg:
        (folder / "dk.cpg").unlink(missing_ok=True)
    if not keep_prj:
        (folder / "dk.prj").unlink(missing_ok=True)
    return folder / "dk.shp"


def zip_folder(folder, target):
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, p.name)
    return target


def test_gbk_shapefile_in_zone_prefix_coordinates_without_cpg_or_prj(ctx, tmp_path):
    plots = ctx.store.read_frame(ctx.catalog.get("plots"))
    shp = write_shapefile(national_frame(plots), tmp_path / "gbk", keep_prj=False)
    raw = (tmp_path / "gbk" / "dk.dbf").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw[int.from_bytes(raw[8:10], "little"):].decode("utf-8")  # really GBK bytes
    assert "张三丰".encode("gbk") in raw
    # no .prj: eastings of 39 xxx xxx m are the zone-prefixed EPSG:4527
    zipped = zip_folder(tmp_path / "gbk", tmp_path / "dk.zip")
    assert not shp.with_suffix(".cpg").exists()
    result = imports.run_import(ctx, zipped, dry_run=False)
    report = result["report"]
    assert report["ok"] and report["encoding"] == "gbk" and report["crs"] == "EPSG:4527"
    assert "detected" in report["encoding_detection"] and "magnitudes" in report["crs_detection"]
    assert report["field_mapping"]["measured_area_mu"] == "SCMJ" and report["field_mapping"]["contractor_name"] == "CBFMC"
    back = ctx.store.read_frame(ctx.catalog.get("plots"))
    assert ctx.store.origin(ctx.catalog.get("plots")) == "imported" and len(back) == len(plots)
    assert back["contractor_name"].iloc[:2].tolist() == ["张三丰", "张四丰"] and set(back["dkdz"]) == {"机耕路"}
    # coordinates come back to CGCS2000 lon/lat within a millimetre (Shapefile rings run clockwise: normalised)
    a = shapely.get_coordinates(shapely.normalize(back.geometry.values))
    b = shapely.get_coordinates(shapely.normalize(plots.geometry.values))
    assert np.abs(a - b).max() < 1e-8
    assert list(back["county_adcode"]) == list(plots["county_adcode"])


def test_lying_cpg_and_gb18030_names(ctx, tmp_path):
    """A .cpg that says UTF-8 over GBK bytes is overruled by the bytes (names would come out garbled); a .cpg
    with a byte-order mark is read; a name outside GBK (㐀, four bytes in GB 18030) is read as GB 18030."""
    plots = ctx.store.read_frame(ctx.catalog.get("plots"))
    frame = national_frame(plots)
    write_shapefile(frame, tmp_path / "lie", keep_prj=True)
    (tmp_path / "lie" / "dk.cpg").write_text("UTF-8")
    dataset = imports.unpack(zip_folder(tmp_path / "lie", tmp_path / "lie.zip"), tmp_path / "w1", _limits())
    encoding, how = imports.detect_encoding(dataset)
    assert encoding == "gbk" and "does not fit" in how
    assert imports.read_source(dataset, encoding)["CBFMC"].iloc[:2].tolist() == ["张三丰", "张四丰"]
    write_shapefile(frame, tmp_path / "bom", encoding="UTF-8")
    (tmp_path / "bom" / "dk.cpg").write_bytes(b"\xef\xbb\xbfUTF-8\r\n")
    assert imports.detect_encoding(tmp_path / "bom" / "dk.shp")[0] == "utf-8"
    frame["CBFMC"] = "㐀" + frame["CBFMC"]
    with pytest.raises(UnicodeEncodeError):
        "㐀".encode("gbk")
    write_shapefile(frame, tmp_path / "gb18030", encoding="GB18030")
    encoding, _ = imports.detect_encoding(tmp_path / "gb18030" / "dk.shp")
    assert encoding == "gb18030"
    assert imports.read_source(tmp_path / "gb18030" / "dk.shp", encoding)["CBFMC"].iloc[0] == "㐀张三丰"


def test_national_sfjbnt_codes_are_read_as_yes_no(ctx, tmp_path):
    """NY/T 2539 writes 是否基本农田 as the code 1 (是) / 2 (否): such a file imports with True/False, and a value
    that is no such code is an error in the report (it made the whole import a bare bad_field_value before)."""
    plots = ctx.store.read_frame(ctx.catalog.get("plots"))
    frame = national_frame(plots, "EPSG:4548")
    truth = [i % 3 == 0 for i in range(len(frame))]
    frame["SFJBNT"] = ["1" if t else "2" for t in truth]
    frame.to_file(tmp_path / "codes.gpkg")
    result = imports.run_import(ctx, tmp_path / "codes.gpkg", dry_run=False)
    assert result["report"]["ok"], result["report"]["errors"]
    assert ctx.store.read_frame(ctx.catalog.get("plots"))["is_basic_farmland"].tolist() == truth
    frame["SFJBNT"] = ["是", "否", "Y", "N", "true", "0"] * (len(frame) // 6) + ["1"] * (len(frame) % 6)
    frame.loc[4, "SFJBNT"] = "也许"
    frame.to_file(tmp_path / "words.gpkg")
    with pytest.raises(imports.ImportRefused) as err:
        imports.run_import(ctx, tmp_path / "words.gpkg", dry_run=False)
    errors = err.value.result["report"]["errors"]
    assert [e["code"] for e in errors] == ["bad_sfjbnt"] and errors[0]["count"] == 1


def test_utf8_geojson_and_4548_geopackage(ctx, tmp_path):
    plots = ctx.store.read_frame(ctx.catalog.get("plots"))
    national_frame(plots, "EPSG:4490").to_file(tmp_path / "dk.geojson")
    report = imports.run_import(ctx, tmp_path / "dk.geojson", dry_run=True)["report"]
    assert report["ok"] and report["encoding"] == "utf-8" and report["crs"] == "EPSG:4490"
    national_frame(plots, "EPSG:4548").to_file(tmp_path / "dk.gpkg")
    report = imports.run_import(ctx, tmp_path / "dk.gpkg", dry_run=True)["report"]
    assert report["ok"] and report["crs"] == "EPSG:4548" and "declared" in report["crs_detection"]


def test_declared_crs_confirmed_against_langfang(ctx, tmp_path):
    plots = ctx.store.read_frame(ctx.catalog.get("plots"))
    # zone-prefixed numbers labelled EPSG:4548: the message names the zone prefix
    wrong = national_frame(plots, "EPSG:4527").set_crs("EPSG:4548", allow_override=True)
    wrong.to_file(tmp_path / "wrong.gpkg")
    with pytest.raises(GisError) as err:
        imports.run_import(ctx, tmp_path / "wrong.gpkg", dry_run=True)
    assert err.value.status == 422 and "zone prefix" in err.value.message_en
    # no .prj and half the eastings with the prefix, half without: ambiguous
    mixed = national_frame(plots, "EPSG:4548")
    mixed.loc[:10, "geometry"] = national_frame(plots, "EPSG:4527").geometry.values[:11]
    write_shapefile(mixed.set_crs(None, allow_override=True), tmp_path / "mixed", encoding="UTF-8", keep_prj=False)
    with pytest.raises(GisError) as err:
        imports.run_import(ctx, tmp_path / "mixed" / "dk.shp", dry_run=True)
    assert err.value.code == "ambiguous_crs" and "zone prefix 39" in err.value.message_en


def test_validation_report_lists_every_fault_and_writes_nothing(ctx, tmp_path):
    layer = ctx.catalog.get("plots")
    before = ctx.store.version(layer)
    frame = national_frame(ctx.store.read_frame(layer), "EPSG:4548")
    geoms = frame.geometry.values.copy()
    x0, y0, x1, y1 = geoms[0].bounds
    geoms[0] = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])  # bow-tie: repair would halve it → rejected
    geoms[1] = shapely.Polygon(list(geoms[1].exterior.coords)[:-1] + [geoms[1].exterior.coords[0]] * 2)  # repeated point: still valid
    geoms[2] = shapely.affinity.translate(geoms[3], 3.0, 0.0)  # overlaps plot 3
    frame["geometry"] = geoms
    frame.loc[4, "DKBM"] = frame.loc[5, "DKBM"]  # duplicate
    frame.loc[6, "DKBM"] = "131022101001010001X"  # malformed
    frame.loc[7, "DKBM"] = "139999" + frame.loc[7, "DKBM"][6:]  # another county's code
    frame.loc[8, "CBFBM"] = "12345"
    frame.loc[9, "SCMJ"] = round(frame.loc[9, "HTMJ"] * 1.2, 2)  # area mismatch: a warning
    frame.to_file(tmp_path / "bad.gpkg")
    with pytest.raises(imports.ImportRefused) as err:
        imports.run_import(ctx, tmp_path / "bad.gpkg", dry_run=False)
    body = err.value.body()
    assert err.value.status == 422 and body["code"] == "import_refused" and body["written"] == 0
    errors = {e["code"]: e for e in body["report"]["errors"]}
    assert set(errors) == {"geometry_rejected", "duplicate_dkbm", "malformed_dkbm", "malformed_cbfbm", "overlap",
                           "fbfbm_not_in_dkbm"}  # plot 7's FBFBM column still names the right county
    assert errors["duplicate_dkbm"]["examples"] == [frame.loc[5, "DKBM"]]
    g = frame.geometry.values  # brute force over every pair (plot 0's bow-tie is rejected before the overlap test)
    pairs = sum(g[i].intersection(g[j]).area > 1.0 for i in range(1, len(g)) for j in range(i + 1, len(g)))
    assert errors["malformed_dkbm"]["count"] == 2 and errors["overlap"]["count"] == pairs >= 1
    assert errors["geometry_rejected"]["examples"][0].startswith(frame.loc[0, "DKBM"])
    warnings = {w["code"]: w for w in body["report"]["warnings"]}
    assert warnings["area_mismatch"]["examples"][0].startswith(frame.loc[9, "DKBM"])
    assert ctx.store.version(layer) == before and ctx.store.origin(layer) == "demo"


def test_repairable_geometry_is_repaired(ctx, tmp_path):
    layer = ctx.catalog.get("plots")
    frame = national_frame(ctx.store.read_frame(layer), "EPSG:4548")
    x0, y0, x1, y1 = frame.geometry.values[0].bounds
    # a tiny spike (self-touching ring) that make_valid removes with a negligible area change
    frame.loc[0, "geometry"] = shapely.Polygon([(x0, y0), (x1, y0), (x1, y1), (x0 + 5, y1), (x0 + 5, y1 + 0.001),
                                                (x0 + 5, y1), (x0, y1)])
    assert not frame.geometry.values[0].is_valid
    frame.to_file(tmp_path / "spike.gpkg")
    result = imports.run_import(ctx, tmp_path / "spike.gpkg", dry_run=False)
    warnings = {w["code"]: w for w in result["report"]["warnings"]}
    assert result["report"]["ok"] and warnings["geometry_repaired"]["count"] == 1
    back = ctx.store.read_frame(layer)
    assert back.geometry.is_valid.all()


def test_import_failing_half_way_leaves_previous_data_and_rollback_restores(ctx, tmp_path, monkeypatch):
    layer = ctx.catalog.get("plots")
    before = ctx.store.read_frame(layer)
    version = ctx.store.version(layer)
    frame = national_frame(before, "EPSG:4548")
    frame["CBFMC"] = "新户主"
    frame.to_file(tmp_path / "new.gpkg")

    import gis_service.store.gpkg as gpkg

    def fail(*_):  # the new file is written, its origin table is not: the write stops half-way
        raise OSError("disk full (injected)")

    with monkeypatch.context() as m:
        m.setattr(gpkg, "_write_origin", fail)
        with pytest.raises(OSError, match="injected"):
            imports.run_import(ctx, tmp_path / "new.gpkg", dry_run=False)
    assert ctx.store.version(layer) == version and ctx.store.origin(layer) == "demo"
    pd.testing.assert_frame_equal(ctx.store.read_frame(layer).drop(columns="geometry"), before.drop(columns="geometry"))
    assert not list(layer.data_path.parent.glob(".*tmp*")) and imports.versions_for(ctx, layer, 5).list() == []
    # the same import succeeds, then rollback brings the demo data (and its origin) back
    result = imports.run_import(ctx, tmp_path / "new.gpkg", dry_run=False)
    assert result["written"] == len(before) and result["previous_version"]["origin"] == "demo"
    assert set(ctx.store.read_frame(layer)["contractor_name"]) == {"新户主"}
    restored = imports.run_rollback(ctx)
    assert restored["features"] == len(before) and ctx.store.origin(layer) == "demo"
    assert ctx.store.read_frame(layer)["contractor_name"].tolist() == before["contractor_name"].tolist()
    with pytest.raises(GisError) as err:
        imports.run_rollback(ctx)
    assert err.value.status == 409


def _limits(**kw):
    base = dict(max_upload_bytes=50 * 2**20, max_unzipped_bytes=40 * 2**20, max_ratio=100, ratio_min_bytes=2**20,
                max_members=200)
    return imports.Limits(**{**base, **kw})


def test_zip_bomb_traversal_and_oversize_refused(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dk.shp", b"\0" * (20 * 2**20))  # 20 MB of zeros compress about 1000×
    with pytest.raises(GisError) as err:
        imports.unpack(bomb, tmp_path / "w1", _limits())
    assert err.value.code == "zip_bomb" and err.value.status == 422
    with pytest.raises(GisError) as err:
        imports.unpack(bomb, tmp_path / "w2", _limits(max_ratio=100_000, max_unzipped_bytes=10 * 2**20))
    assert err.value.code == "zip_bomb"  # total uncompressed size
    for name in ("../evil.shp", "/etc/evil.shp", "a/../../evil.shp", "C:\\evil.shp", "..\\evil.shp"):
        path = tmp_path / "trav.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(name, b"x")
        with pytest.raises(GisError) as err:
            imports.unpack(path, tmp_path / "w3", _limits())
        assert err.value.code == "unsafe_archive_path", name
    assert not (tmp_path / "evil.shp").exists()
    big = tmp_path / "big.geojson"
    big.write_bytes(b"{" + b" " * 2048)
    with pytest.raises(GisError) as err:
        imports.unpack(big, tmp_path / "w4", _limits(max_upload_bytes=1024))
    assert err.value.status == 413


def test_lying_zip_header_caught_while_inflating(tmp_path):
    """A member whose directory entry claims fewer bytes than it inflates to is stopped at the claimed size."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("dk.geojson", b"{" + b" " * 5000)
    data = bytearray(buf.getvalue())
    # patch the uncompressed size in the central directory to 100 bytes
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (100).to_bytes(4, "little")
    (tmp_path / "lie.zip").write_bytes(bytes(data))
    with pytest.raises(GisError) as err:  # a 4xx JSON answer, never a bare BadZipFile (a 500)
        imports.unpack(tmp_path / "lie.zip", tmp_path / "w", _limits())
    assert err.value.code in ("zip_bomb", "bad_archive") and err.value.status == 422  # size or CRC: refused
    assert not (tmp_path / "w" / "unpacked" / "dk.geojson").exists()  # no partial member left


def _zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


def test_encrypted_corrupt_linked_nested_and_crowded_archives_refused(tmp_path):
    """Every archive that cannot be unpacked safely is a 422 JSON refusal naming why, with nothing extracted."""
    locked = bytearray(_zip(tmp_path / "e.zip", [("dk.geojson", b"{}")]).read_bytes())
    cd = locked.rfind(b"PK\x01\x02")
    locked[6] |= 0x1  # encrypted flag in the local header and the central directory: zipfile wants a
    locked[cd + 8] |= 0x1  # password (RuntimeError, a 500 before)
    (tmp_path / "e.zip").write_bytes(bytes(locked))
    link = zipfile.ZipInfo("dk.shp")
    link.external_attr = (0o120777 << 16)  # a symbolic link to /etc/passwd
    corrupt = bytearray(_zip(tmp_path / "c.zip", [("dk.geojson", b'{"type": "FeatureCollection"}' * 500)]).read_bytes())
    start = 30 + len("dk.geojson")
    corrupt[start:start + 40] = b"\xff" * 40  # the deflate stream damaged (zlib.error / bad CRC, a 500 before)
    (tmp_path / "c.zip").write_bytes(bytes(corrupt))
    cases = {"bad_archive": [tmp_path / "e.zip", tmp_path / "c.zip"],
             "unsafe_archive_path": [_zip(tmp_path / "l.zip", [(link, b"/etc/passwd")])],
             "archive_too_many_files": [_zip(tmp_path / "m.zip", [(f"f{i}.txt", b"x") for i in range(201)])],
             "no_single_dataset": [_zip(tmp_path / "n.zip", [("inner.zip", _zip(tmp_path / "i.zip", [
                 ("dk.geojson", b"{}")]).read_bytes())])]}  # a zip inside a zip is not opened
    for code, paths in cases.items():
        for path in paths:
            work = tmp_path / f"w-{path.stem}"
            with pytest.raises(GisError) as err:
                imports.unpack(path, work, _limits())
            assert err.value.code == code and err.value.status == 422, (path.name, err.value.code)
            assert not list(work.rglob("*.geojson")) and not list(work.rglob("dk.shp"))


def test_cli_land_import_dry_run_import_and_rollback(ctx, tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, GIS_LAYERS_DIR=str(ctx.settings.layers_dir), GIS_VAR_DIR=str(ctx.settings.var_dir))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "gis_service.cli", "land", *args], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=300)

    layer = ctx.catalog.get("plots")
    before = ctx.store.read_frame(layer)
    frame = national_frame(before, "EPSG:4548")
    frame["CBFMC"] = "王五"
    frame.to_file(tmp_path / "cli.gpkg")
    dry = cli("import", str(tmp_path / "cli.gpkg"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "EPSG:4548" in dry.stdout and "nothing written" in dry.stdout and ctx.store.origin(layer) == "demo"
    done = cli("import", str(tmp_path / "cli.gpkg"))
    assert done.returncode == 0, done.stderr
    assert f"imported {len(before)} plots" in done.stdout
    assert ctx.store.origin(layer) == "imported" and set(ctx.store.read_frame(layer)["contractor_name"]) == {"王五"}
    frame.loc[0, "DKBM"] = "123"
    frame.to_file(tmp_path / "bad.gpkg")
    bad = cli("import", str(tmp_path / "bad.gpkg"))
    assert bad.returncode == 2 and "malformed_dkbm" in bad.stdout and "import_refused" in bad.stderr
    back = cli("import", "--rollback")
    assert back.returncode == 0, back.stderr
    assert ctx.store.origin(layer) == "demo"
    assert ctx.store.read_frame(layer)["contractor_name"].tolist() == before["contractor_name"].tolist()


def test_generic_import_refuses_the_plots_layer(ctx, tmp_path):
    """`gis-service import plots FILE` would skip the land import's validation, saved versions and history: it is
    refused, naming the domain's own command, and the layer is untouched."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, GIS_LAYERS_DIR=str(ctx.settings.layers_dir), GIS_VAR_DIR=str(ctx.settings.var_dir))
    layer = ctx.catalog.get("plots")
    before = ctx.store.read_frame(layer)
    frame = before.copy()
    frame.loc[0, "dkbm"] = "123"  # malformed: the land import would refuse it
    frame.to_file(tmp_path / "raw.gpkg")
    version = ctx.store.version(layer)
    done = subprocess.run([sys.executable, "-m", "gis_service.cli", "import", "plots", str(tmp_path / "raw.gpkg")],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "layer_imported_by_domain" in done.stderr, done.stderr
    assert "gis-service land import FILE" in done.stderr
    assert ctx.store.version(layer) == version and ctx.store.origin(layer) == "demo"


def test_crs_by_magnitude_degrees_swapped_and_unknown(ctx):
    plots = ctx.store.read_frame(ctx.catalog.get("plots"))
    geo = gpd.GeoDataFrame(geometry=np.asarray(plots.geometry.values), crs=None)  # no CRS at all
    assert geo.crs is None and imports.detect_crs(geo) == ("EPSG:4490", "按坐标数值判定 detected from the coordinate magnitudes")
    metric = plots.to_crs("EPSG:4548")
    swapped = gpd.GeoDataFrame(geometry=shapely.transform(np.asarray(metric.geometry.values), lambda c: c[:, ::-1]))
    with pytest.raises(GisError) as err:
        imports.detect_crs(swapped)
    assert err.value.code == "ambiguous_crs" and "swapped" in err.value.message_en
    web = gpd.GeoDataFrame(geometry=np.asarray(plots.to_crs("EPSG:3857").geometry.values))  # Web Mercator, undeclared
    with pytest.raises(GisError) as err:
        imports.detect_crs(web)
    assert err.value.code == "missing_crs" and err.value.status == 422
    # stated by the caller: numbers without prefix read as zone-prefixed are refused naming the prefix
    with pytest.raises(GisError) as err:
        imports.detect_crs(gpd.GeoDataFrame(geometry=np.asarray(metric.geometry.values)), "epsg:4527")
    assert "zone prefix" in err.value.message_en


def test_gbk_geojson_is_read(ctx, tmp_path):
    plots = ctx.store.read_frame(ctx.catalog.get("plots"))
    frame = national_frame(plots, "EPSG:4490")
    text = frame.to_json(ensure_ascii=False)
    (tmp_path / "gbk.geojson").write_bytes(text.encode("gbk"))
    result = imports.run_import(ctx, tmp_path / "gbk.geojson", dry_run=False)
    assert result["report"]["encoding"] == "gbk"
    assert ctx.store.read_frame(ctx.catalog.get("plots"))["contractor_name"].iloc[0] == "张三丰"


def test_a_file_without_some_counties_needs_replace_all(ctx, tmp_path, catalog, store):
    layer = ctx.catalog.get("plots")
    demo = store.read_frame(catalog.get("plots"))
    own = ctx.store.read_frame(layer)
    other = demo[demo["county_adcode"] != own["county_adcode"].iloc[0]]
    other = other[other["fbfbm"] == other["fbfbm"].iloc[0]].head(10)
    both = pd.concat([own, other.reindex(columns=own.columns)], ignore_index=True)
    ctx.store.write(layer, gpd.GeoDataFrame(both, crs="EPSG:4490"), origin="demo")
    national_frame(own, "EPSG:4548").to_file(tmp_path / "one.gpkg")  # only the first county's plots
    with pytest.raises(imports.ImportRefused) as err:
        imports.run_import(ctx, tmp_path / "one.gpkg", dry_run=False)
    [issue] = err.value.body()["report"]["errors"]
    assert issue["code"] == "counties_dropped" and issue["examples"] == [f"{other['county_adcode'].iloc[0]}：{len(other)} 块"]
    assert len(ctx.store.read_frame(layer)) == len(both)
    result = imports.run_import(ctx, tmp_path / "one.gpkg", dry_run=False, replace_all=True)
    assert "counties_dropped" in [w["code"] for w in result["report"]["warnings"]]
    assert len(ctx.store.read_frame(layer)) == len(own)


@pytest.fixture()
def recorded_ctx(ctx, tmp_path):
    """The import context with a record store, so that imports write the land history."""
    from gis_service.store import SQLiteRecordStore

    records = SQLiteRecordStore(tmp_path / "var" / "records.sqlite")
    return DomainContext(ctx.settings, ctx.catalog, ctx.store, records, ctx.rules, None), tmp_path / "var" / "records.sqlite"


def renamed(ctx, tmp_path, name):
    layer = ctx.catalog.get("plots")
    before = ctx.store.read_frame(layer)
    frame = national_frame(before, "EPSG:4548")
    frame["DKMC"] = name
    frame.to_file(tmp_path / f"{name}.gpkg")
    return layer, before, tmp_path / f"{name}.gpkg"


def test_the_layer_write_holds_no_record_store_lock_and_history_follows(recorded_ctx, tmp_path, monkeypatch):
    """A flood report (any record-store write) can commit while the plots are being written: the history's
    versions are appended in their own short transaction after the write."""
    ctx, records_path = recorded_ctx
    _, before, path = renamed(ctx, tmp_path, "导入后")
    probes = []
    write = ctx.store.write

    def probing_write(*args, **kwargs):
        conn = sqlite3.connect(records_path, timeout=0)  # another writer that does not wait
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            probes.append("free")
        except sqlite3.OperationalError as exc:
            probes.append(str(exc))
        finally:
            conn.close()
        return write(*args, **kwargs)

    monkeypatch.setattr(ctx.store, "write", probing_write)
    result = imports.run_import(ctx, path, dry_run=False)
    assert probes == ["free"]
    assert result["history_changed"] == len(before)
    history = History(ctx.records)
    versions = history.versions("plot", before["dkbm"].iloc[0])
    assert [v["data"]["dkmc"] for v in versions] == [before["dkmc"].iloc[0], "导入后"]


def test_failed_history_puts_the_previous_plots_back(recorded_ctx, tmp_path, monkeypatch):
    ctx, _ = recorded_ctx
    layer, before, path = renamed(ctx, tmp_path, "不应留下")

    def fail(*_):
        raise sqlite3.OperationalError("disk I/O error (injected)")

    monkeypatch.setattr(imports, "record_history", fail)
    with pytest.raises(sqlite3.OperationalError, match="injected"):
        imports.run_import(ctx, path, dry_run=False)
    after = ctx.store.read_frame(layer)
    assert after["dkmc"].tolist() == before["dkmc"].tolist() and ctx.store.origin(layer) == "demo"
    assert imports.versions_for(ctx, layer, 5).list() == []  # the saved copy went back into the layer
    with ctx.records.reading() as tx:
        assert tx.find(VERSIONS) == []


def test_a_failed_rollback_write_leaves_the_saved_versions_as_they_were(recorded_ctx, tmp_path, monkeypatch):
    """The copy of the current data a rollback saves first (for its history) is dropped when the layer's write
    fails: else it stayed listed as the newest version, and the next rollback 'restored' the current data."""
    ctx, _ = recorded_ctx
    layer, before, path = renamed(ctx, tmp_path, "导入后")
    imports.run_import(ctx, path, dry_run=False)
    listed = imports.versions_for(ctx, layer, 5).list()
    write = ctx.store.write

    def failing_write(*_args, **_kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(ctx.store, "write", failing_write)
    with pytest.raises(OSError, match="injected"):
        imports.run_rollback(ctx)
    assert imports.versions_for(ctx, layer, 5).list() == listed
    assert set(ctx.store.read_frame(layer)["dkmc"]) == {"导入后"}
    monkeypatch.setattr(ctx.store, "write", write)
    imports.run_rollback(ctx)  # goes back to the data before the import
    assert ctx.store.read_frame(layer)["dkmc"].tolist() == before["dkmc"].tolist()
    assert imports.versions_for(ctx, layer, 5).list() == []


def test_a_worker_with_an_out_of_date_version_does_not_rebuild_the_old_index(recorded_ctx):
    """Two workers share var/land. After an import the worker that sees the new data builds its index and
    removes the old one; the other, whose version check is still fresh (up to VERSION_CHECK_S old), found the
    old index missing, rebuilt it (minutes at 2 000 000 plots) and removed the new one, which the first
    worker then rebuilt in turn. It now looks the version up again before building."""
    import time

    from gis_service.land.service import LandService

    ctx, _ = recorded_ctx
    for extra in (REPO_ROOT / "layers" / "land").glob("*.sqlite"):  # the register
        shutil.copy(extra, ctx.settings.layers_dir / "land")
    indexes = lambda: sorted(p.name for p in (ctx.settings.var_dir / "land").glob("index-*.sqlite"))  # noqa: E731
    b = LandService(ctx)
    b.index()
    old_version, old = b.data_version(), indexes()
    layer = ctx.catalog.get("plots")
    ctx.store.write(layer, ctx.store.read_frame(layer), origin="imported")  # an import: a new data version
    a = LandService(ctx)
    a.index()
    new = indexes()
    assert len(new) == 1 and new != old
    b._version = (time.monotonic(), old_version)  # b checked the version just before the import
    b.index()
    assert indexes() == new
