"""PyQGIS side of the QGIS tests: run by Debian's /usr/bin/python3 (where python3-qgis lives), never by pytest.

Reads one JSON job on stdin, opens the project headless (QT_QPA_PLATFORM=offscreen) with its own profile and
authentication database, and writes one JSON report to the file the job names (QGIS prints to stdout). The job:
  report       path of the JSON report to write
  project      path of the .qgz/.qgs to open
  profile      an empty directory: QGIS settings and qgis-auth.db live there
  authcfg      optional {"id", "username", "password"}: a Basic configuration stored under that id
  read         collection ids whose features to read in full (attributes of the first few come back)
  rect         optional {"<collection id>": [minlon, minlat, maxlon, maxlat]}: features read inside that box
  render       optional {"path", "width", "height", "extent": [xmin, ymin, xmax, ymax] in the project CRS}
  auth_dialog  optional path: a screenshot of the Basic authentication configuration editor
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    job = json.load(sys.stdin)
    os.environ["QGIS_AUTH_DB_DIR_PATH"] = job["profile"]
    from qgis.core import QgsApplication, QgsAuthMethodConfig

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], bool(job.get("auth_dialog")), job["profile"])
    app.initQgis()
    report: dict = {"log": []}
    QgsApplication.messageLog().messageReceived.connect(
        lambda message, tag, level: report["log"].append(f"{tag}: {message}"))
    auth = QgsApplication.authManager()
    if job.get("authcfg"):
        assert auth.setMasterPassword("test-master-password", True), "master password"
        cfg = QgsAuthMethodConfig("Basic")
        cfg.setId(job["authcfg"]["id"])
        cfg.setName("廊坊空间决策支持系统")
        cfg.setConfig("username", job["authcfg"]["username"])
        cfg.setConfig("password", job["authcfg"]["password"])
        assert auth.storeAuthenticationConfig(cfg), "store authentication config"
        report["authcfg_stored"] = cfg.id()

    if job.get("project"):  # a GUI application (screenshots) must not download: QGIS shows progress dialogs
        _open_project(job, report)
    if job.get("auth_dialog"):
        _screenshots(job, report, app, auth)
    with open(job["report"], "w", encoding="utf-8") as out:
        json.dump(report, out, ensure_ascii=False)
    os._exit(0)  # QGIS's teardown of network threads can hang a headless process: the report is written


def _open_project(job: dict, report: dict) -> None:
    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeatureRequest,
                           QgsLayerTreeGroup, QgsLayerTreeLayer, QgsMapLayerType, QgsMapRendererSequentialJob,
                           QgsMapSettings, QgsProject, QgsRectangle, QgsUnitTypes)
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    project = QgsProject.instance()
    report["read"] = project.read(job["project"])
    report["crs"] = project.crs().authid()
    report["ellipsoid"] = project.ellipsoid()
    report["distance_units"] = QgsUnitTypes.toString(project.distanceUnits())
    report["area_units"] = QgsUnitTypes.toString(project.areaUnits())
    groups = []
    for child in project.layerTreeRoot().children():
        if isinstance(child, QgsLayerTreeGroup):
            groups.append({"name": child.name(), "layers": [n.name() for n in child.children()
                                                            if isinstance(n, QgsLayerTreeLayer)]})
    report["groups"] = groups
    layers = {}
    for layer in project.mapLayers().values():
        uri = layer.dataProvider().uri() if layer.dataProvider() else None
        typename = (uri.param("typename") if uri else "") or layer.id()
        info = {"name": layer.name(), "valid": layer.isValid(), "provider": layer.providerType(),
                "crs": layer.crs().authid(), "source": layer.source(), "scale_based": layer.hasScaleBasedVisibility(),
                "min_scale": layer.minimumScale(), "max_scale": layer.maximumScale()}
        if layer.isValid() and layer.type() == QgsMapLayerType.VectorTileLayer:
            info["tile_source"] = layer.source()
        elif layer.isValid():
            md = layer.metadata() if layer.metadata().abstract() else layer.dataProvider().layerMetadata()
            info["metadata"] = {"title": md.title(), "abstract": md.abstract(), "licenses": md.licenses(),
                                "keywords": md.keywords(), "links": [[l.name, l.url, l.mimeType, l.description]
                                                                     for l in md.links()]}
            info["fields"] = [f.name() for f in layer.fields()]
            info["aliases"] = {f.name(): layer.attributeAlias(i) for i, f in enumerate(layer.fields())}
            renderer = layer.renderer()
            info["renderer"] = renderer.type() if renderer else None
            if renderer is None:
                pass
            elif renderer.type() == "categorizedSymbol":
                info["categories"] = [[str(c.value()), c.label(), c.symbol().color().name()]
                                      for c in renderer.categories()]
            else:
                info["colour"] = renderer.symbol().color().name()
            info["labels"] = layer.labelsEnabled()
            if layer.labeling() is not None:
                settings = layer.labeling().settings()
                info["label_field"] = settings.fieldName
                info["label_font"] = settings.format().font().family()
                info["label_min_scale"] = settings.minimumScale if settings.scaleVisibility else None
        layers[typename] = info
    report["layers"] = layers

    def features(layer, request):
        out, count = [], 0
        for feature in layer.getFeatures(request):
            count += 1
            if len(out) < 5:
                out.append({f.name(): _plain(feature[f.name()]) for f in layer.fields()})
        return count, out

    by_typename = {t: project.mapLayer(f"{t}_oapif") for t in layers}
    for typename in job.get("read", []):
        layer = by_typename[typename]
        count, sample = features(layer, QgsFeatureRequest())
        layers[typename].update(read_count=count, feature_count=layer.featureCount(), sample=sample)
    for typename, box in job.get("rect", {}).items():
        layer = by_typename[typename]
        rect = QgsRectangle(*box)  # lon/lat: the layer's own CRS
        count, sample = features(layer, QgsFeatureRequest().setFilterRect(rect))
        layers[typename].update(rect_count=count, rect_sample=sample)

    if job.get("render"):
        spec = job["render"]
        settings = QgsMapSettings()
        settings.setDestinationCrs(project.crs())
        settings.setTransformContext(project.transformContext())
        settings.setEllipsoid(project.ellipsoid())
        settings.setOutputSize(QSize(spec["width"], spec["height"]))
        settings.setBackgroundColor(QColor(255, 255, 255))
        settings.setExtent(QgsRectangle(*spec["extent"]))
        settings.setLayers(project.layerTreeRoot().layerOrder())  # top of the tree drawn last, as in QGIS
        settings.setFlag(QgsMapSettings.DrawLabeling, True)
        render = QgsMapRendererSequentialJob(settings)
        render.start()
        render.waitForFinished()
        image = render.renderedImage()
        report["render"] = {"saved": image.save(spec["path"], "PNG"), "scale": settings.scale(),
                            "errors": [f"{e.layerID}: {e.message}" for e in render.errors()],
                            "labels": _label_texts(render)}
        wgs = QgsCoordinateTransform(project.crs(), QgsCoordinateReferenceSystem("OGC:CRS84"), project)
        report["render"]["extent_lonlat"] = _box(wgs.transformBoundingBox(QgsRectangle(*spec["extent"])))


def _screenshots(job: dict, report: dict, app, auth) -> None:
    from qgis.gui import QgsAuthEditorWidgets
    from qgis.PyQt.QtWidgets import QLabel, QLineEdit, QVBoxLayout, QWidget

    # Settings → Options → Authentication, as QGIS shows it, with the configuration the project names
    editors = QgsAuthEditorWidgets(None)
    editors.resize(900, 420)
    editors.show()
    app.processEvents()
    report["auth_list"] = editors.grab().save(job["auth_dialog"].replace(".png", "-list.png"), "PNG")
    # the Basic method's own form (user name, password = the key, shown masked) and the id the layers use
    panel = QWidget()
    box = QVBoxLayout(panel)
    box.addWidget(QLabel(f"认证配置 ID：{job['authcfg']['id']}　方法：Basic（用户名任意，密码 = API 密钥）"))
    basic = auth.authMethodEditWidget("Basic", panel)
    # the form's own fields, filled as a user types them (QgsAuthMethodEdit.loadConfig crashes PyQGIS 3.22 at times)
    for name, value in (("leUsername", job["authcfg"]["username"]), ("lePassword", job["authcfg"]["password"])):
        basic.findChild(QLineEdit, name).setText(value)
    box.addWidget(basic)
    panel.resize(720, 360)
    panel.show()
    app.processEvents()
    report["auth_dialog"] = panel.grab().save(job["auth_dialog"], "PNG")


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "isNull") and value.isNull():
        return None
    if hasattr(value, "toString"):
        return value.toString("yyyy-MM-dd") if type(value).__name__ == "QDate" else value.toString()
    return str(value)


def _box(rect) -> list:
    return [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()]


def _label_texts(render) -> list:
    results = render.takeLabelingResults()
    if results is None:
        return []
    return sorted({label.labelText for label in results.allLabels()})


if __name__ == "__main__":
    main()
