"""Command line: gis-service serve | build-layers | layers | export | import | keys | maps | qgis-project | db.

Imports are inside the commands so that light commands (keys, --help) start without loading GDAL/geopandas."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .errors import GisError


def _services():
    from .catalog import Catalog
    from .config import Settings
    from .store import open_store

    settings = Settings.from_env()
    return settings, Catalog.load(settings.layers_dir), open_store(settings)


def _vector_layer(catalog, layer_id: str):
    layer = catalog.get(layer_id)
    if layer is None or layer.is_raster:
        raise GisError("not_found", f"没有图层 {layer_id}", f"no vector layer '{layer_id}'", 404)
    return layer


def cmd_serve(args) -> None:
    import os

    import uvicorn

    from .api.app import create_app
    from .build import build_layers
    from .config import Settings
    from .domains import refresh_derived

    chosen = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v is not None}
    settings = Settings.from_env(**chosen)
    app = create_app(settings)  # validates every layer definition and rule file before anything else happens
    svc = app.state.services
    build_layers(svc.catalog, svc.store)
    refresh_derived(svc.domains, svc.domain_contexts)  # once, here: the workers only read
    print(f"地图首页 Map index: http://{settings.host}:{settings.port}/maps/", flush=True)
    log_level = "info" if args.access_log else "warning"  # uvicorn logs each request line at info
    if settings.workers == 1:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level)
        return
    # Worker processes import the app themselves; the settings reach them through the environment. They
    # share the layer files (read-only), the key and session database and the record store on disk.
    os.environ.update(GIS_HOST=settings.host, GIS_PORT=str(settings.port), GIS_WORKERS=str(settings.workers))
    uvicorn.run("gis_service.api.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=log_level)


def cmd_build_layers(args) -> None:
    from .build import build_layers

    _, catalog, store = _services()
    if args.regenerate_demo and not args.yes:
        answer = input("将用新生成的演示数据覆盖现有演示图层（导入的数据不受影响），继续？[y/N] "
                       "Regenerate every demo layer (imported data is never touched)? ")
        if answer.strip().lower() not in ("y", "yes", "是"):
            print("已取消 cancelled")
            return
    plots = {} if args.plots is None else {"plots": args.plots}  # else build_layers' default (demo.DEFAULT_PLOTS)
    written = build_layers(catalog, store, regenerate_demo=args.regenerate_demo, **plots)
    print(f"已构建 {len(written)} 个图层 built {len(written)} layers" if written else "图层均已存在 all layers present")


def cmd_layers(args) -> None:
    from .store import display_title

    _, catalog, store = _services()
    for layer in catalog:
        count = "栅格" if layer.is_raster else (store.count(layer) if store.exists(layer) else "未构建")
        origin = store.origin(layer) or "—"
        print(f"{layer.group:<11} {layer.id:<24} {layer.access:<10} {origin:<8} {count!s:>9}  {display_title(store, layer)}")


def cmd_export(args) -> None:
    from .export import export_layer

    _, catalog, store = _services()
    layer = _vector_layer(catalog, args.collection)
    path = export_layer(store, layer, args.format, args.crs, Path(args.output) if args.output else None,
                        unmask=args.unmask)
    print(f"已导出 exported: {path}")


def _domains(settings, catalog, store):
    """The discovered domains and their contexts, as the server builds them (for commands that need them)."""
    from .domains import contexts, discover
    from .backends import open_access_log
    from .store import open_record_store, open_rules

    domains = discover()
    return domains, contexts(domains, settings=settings, catalog=catalog, store=store,
                             records=open_record_store(settings), rules=open_rules(settings),
                             access_log=open_access_log(settings))


def cmd_import(args) -> None:
    from .domains import refresh_derived, refuse_domain_import
    from .importer import import_layer

    settings, catalog, store = _services()
    layer = _vector_layer(catalog, args.collection)
    domains, domain_contexts = _domains(settings, catalog, store)
    refuse_domain_import(domains, layer.id)  # a domain's own import validates, keeps versions and history
    count = import_layer(store, layer, Path(args.file), args.coord_sys)
    print(f"已导入 {count} 个要素到 {layer.id} imported {count} features")
    refreshed = refresh_derived(domains, domain_contexts)  # zones follow the new data
    if refreshed:
        print(f"已更新派生图层 refreshed derived layers: {', '.join(refreshed)}")


def cmd_domain(args) -> None:
    """`gis-service <domain> …`: the domain's own subcommands (Domain.commands), parsed once it is loaded."""
    from .domains import refresh_derived

    settings, catalog, store = _services()
    domains, domain_contexts = _domains(settings, catalog, store)
    domain = next(d for d in domains if d.name == args.command)
    if domain.commands is None:
        raise GisError("no_commands", f"领域 {domain.name} 没有命令行命令", f"domain '{domain.name}' has no commands", 404)
    p = argparse.ArgumentParser(prog=f"gis-service {domain.name}", description=f"{domain.title_zh} {domain.title_en}")
    domain.commands(p)
    sub = p.parse_args(args.rest)
    sub.run(sub, domain_contexts[domain.name], lambda: refresh_derived(domains, domain_contexts))


def _domain_names() -> list[str]:
    """Packages with a domain.py, found without importing them (the parser stays light)."""
    return sorted(path.parent.name for path in Path(__file__).resolve().parent.glob("*/domain.py"))


def cmd_keys(args) -> None:
    from .backends import open_key_store
    from .config import Settings

    keys = open_key_store(Settings.from_env())
    if args.action == "add":
        key = keys.add(args.role, args.name)
        print("新密钥（只显示这一次，请妥善保存） new key, shown once:")
        print(key)
    elif args.action == "revoke":
        print(f"已吊销 {keys.revoke(args.name)} 个密钥 revoked")
    else:
        for k in keys.list():
            print(f"{k['name']:<20} {k['role']:<12} {k['created_at']}  {'已吊销 revoked' if k['revoked'] else ''}")


def cmd_maps(args) -> None:
    import getpass

    from .domains import map_builder
    from .backends import open_access_log
    from .maps.export import export_maps, map_names

    settings, catalog, store = _services()
    if bool(args.name) == bool(args.all):
        raise GisError("bad_parameter", "请给出一个地图名称或 --all（二者取一）", "give one map name or --all", 400)
    domains, domain_contexts = _domains(settings, catalog, store)
    pages = [p.export_name(d.name) for d in domains for p in d.pages]
    names = pages + map_names(catalog, args.role) if args.all else [args.name]
    cap = {} if args.max_features is None else {"feature_cap": args.max_features}
    output = Path(args.output) if args.output else settings.maps_dir
    access_log = open_access_log(settings)
    for name in names:
        try:
            [done] = export_maps([name], output, args.role, catalog=catalog, store=store, settings=settings,
                                 access_log=access_log, builder=map_builder(domains, domain_contexts),
                                 operator=f"cli:{getpass.getuser()}", **cap)
        except GisError as exc:
            if not (args.all and exc.status == 503):  # --all skips pages whose layers are not built here
                raise
            print(f"跳过 skipped {name}: {exc.message}")
            continue
        clear = "；未脱敏个人信息已记入访问日志 personal data in clear, logged" if done.disclosed else ""
        print(f"已导出 exported: {done.path}{clear}")


def cmd_qgis_project(args) -> None:
    from .qgis import DEFAULT_AUTHCFG, LARGE_FEATURES, project_xml, qgz_bytes

    settings, catalog, store = _services()
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    url = url if url.endswith("/ogc") else url + "/ogc"
    authcfg = None if args.role is None else (args.authcfg or DEFAULT_AUTHCFG)
    large = LARGE_FEATURES if args.large_features is None else args.large_features
    xml = project_xml(catalog, store, args.role, url, authcfg, large_features=large)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(qgz_bytes(xml, output.stem + ".qgs") if output.suffix == ".qgz" else xml.encode("utf-8"))
    tmp.replace(output)  # atomic
    print(f"已写出 QGIS 项目 wrote QGIS project: {output}（认证配置 authcfg: {authcfg or '无 none'}）")


def cmd_db(args) -> None:
    """`gis-service db init|migrate|load|status|rules`: the PostgreSQL store (GIS_DATABASE_URL or --url)."""
    from .catalog import Catalog
    from .config import Settings
    from .store import pgload

    settings = Settings.from_env()
    url = args.url or settings.database_url
    if not url:
        raise GisError("no_database", "请设置 GIS_DATABASE_URL=postgresql://… 或使用 --url",
                       "set GIS_DATABASE_URL=postgresql://… or pass --url", 400)
    if args.action in ("init", "migrate"):
        done = pgload.init(url)
        print(f"已应用迁移 applied migrations: {done or '无 none (up to date)'}")
    elif args.action == "rules":
        from .rules import RuleBook
        from .store.pgplatform import set_rules_override

        path = settings.rules_override
        if path.exists():
            RuleBook.load(override_path=path)  # a wrong file is refused here, not at every instance's start
            set_rules_override(url, path.read_text(encoding="utf-8"))
            print(f"已将 {path} 存入数据库，各实例重启后生效 stored {path.name}; restart the instances to apply it")
        else:
            set_rules_override(url, None)
            print(f"{path} 不存在：已删除数据库中的本地规则 no {path.name}: the database's overrides are removed")
    elif args.action == "status":
        state = pgload.status(url)
        print(f"迁移 migrations {state['applied']} / latest {state['latest']}, pending {state['pending']}")
        for layer_id, origin, count in state["layers"]:
            print(f"  {layer_id:<24} {origin:<8} {count:>9}")
    else:
        from .domains import load_into_database

        if args.build:
            written = pgload.build(url, Catalog.load(settings.layers_dir), args.plots)
            print(f"已在数据库中构建 {len(written)} 个图层 built {len(written)} layers in the database")
        else:
            loaded, seconds = pgload.timed(pgload.load, url, Catalog.load(settings.layers_dir),
                                           only=args.layer or None, rules_file=settings.rules_override)
            print(f"已载入 {len(loaded)} 个图层、{sum(loaded.values())} 个要素，用时 {seconds:.0f} 秒 "
                  f"loaded {len(loaded)} layers, {sum(loaded.values())} features in {seconds:.0f} s")
        if not args.layer:  # `db load --layer X` copies those layers only
            for line in load_into_database(settings, url):
                print(line)


class _LazyChoices:
    """argparse choices read from a heavy module only when argparse needs them: when that command's option is
    parsed or its help printed; building the parser (so `keys` or `--help`) does not import GDAL/geopandas.
    Give the option a metavar: without one argparse lists the choices while adding the option."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def _values(self) -> list:
        return list(getattr(importlib.import_module(self.module, __package__), self.name))

    def __contains__(self, value) -> bool:
        return value in self._values()

    def __iter__(self):
        return iter(self._values())


def parser() -> argparse.ArgumentParser:
    from .catalog import ROLES

    p = argparse.ArgumentParser(prog="gis-service", description="廊坊空间决策支持系统 Langfang spatial decision support")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="启动服务 serve the API and maps")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int, help="工作进程数 worker processes (default 1, or GIS_WORKERS)")
    s.add_argument("--access-log", action="store_true",
                   help="记录每个请求行（方法、路径与查询、状态；密钥只在请求头中，不会记录） log every request line")
    s.set_defaults(func=cmd_serve)
    s = sub.add_parser("build-layers", help="构建缺失图层 build missing layers")
    s.add_argument("--plots", type=int, help="演示地块数（默认见 demo.DEFAULT_PLOTS） demo plots (default: demo.DEFAULT_PLOTS)")
    s.add_argument("--regenerate-demo", action="store_true",
                   help="重新生成全部演示图层（需确认；导入的数据和真实图层不受影响） regenerate demo layers (asks first)")
    s.add_argument("--yes", action="store_true", help="不再询问 do not ask for confirmation")
    s.set_defaults(func=cmd_build_layers)
    s = sub.add_parser("layers", help="列出图层与要素数 list layers with feature counts")
    s.set_defaults(func=cmd_layers)
    s = sub.add_parser("export", help="导出图层 export a layer")
    s.add_argument("collection")
    s.add_argument("--format", choices=_LazyChoices(".export", "FORMATS"), default="gpkg", metavar="FORMAT",
                   help="%(choices)s")
    s.add_argument("--crs", default="EPSG:4490", help="如 EPSG:4490、EPSG:4548、EPSG:4527、EPSG:4326")
    s.add_argument("--output", help="输出文件 output file")
    s.add_argument("--unmask", action="store_true", help="导出未脱敏的个人信息（记入访问日志） include personal data (logged)")
    s.set_defaults(func=cmd_export)
    s = sub.add_parser("import", help="以自有数据替换图层 replace a layer with your own data (atomic)")
    s.add_argument("collection")
    s.add_argument("file", help="GeoPackage、GeoJSON、Shapefile 等 GDAL 可读文件")
    s.add_argument("--coord-sys", default=None, choices=_LazyChoices(".crs", "COORD_SYSTEMS"), metavar="COORD_SYS",
                   help="文件无坐标系信息或为 GCJ-02 时指定 source coordinate system when the file lacks one or is GCJ-02")
    s.set_defaults(func=cmd_import)
    s = sub.add_parser("keys", help="管理 API 密钥 manage API keys")
    s.add_argument("action", choices=["add", "list", "revoke"], nargs="?", default="list")
    s.add_argument("--role", choices=ROLES)
    s.add_argument("--name")
    s.set_defaults(func=cmd_keys)
    s = sub.add_parser("maps", help="离线地图 self-contained map files")
    maps_sub = s.add_subparsers(dest="maps_command", required=True)
    s = maps_sub.add_parser("export", help="导出可离线打开的 HTML 地图 export HTML maps that open with no server or internet")
    s.add_argument("name", nargs="?", help="地图名称（图层集合 id） map name (a collection id)")
    s.add_argument("--all", action="store_true", help="导出该角色可见的全部地图 every map the role may see")
    s.add_argument("--output", help="输出目录（默认 maps/） output directory (default: maps/)")
    s.add_argument("--role", choices=ROLES, help="按此角色脱敏（无则匿名，仅公开图层） mask for this role (default: anonymous)")
    s.add_argument("--max-features", type=int,
                   help="每个图层最多嵌入的要素数（默认见 maps.factory.EXPORT_FEATURE_CAP） features embedded per layer")
    s.set_defaults(func=cmd_maps)
    s = sub.add_parser("qgis-project", help="生成 QGIS 项目 write a QGIS project (.qgz/.qgs) for a role")
    s.add_argument("--role", choices=ROLES, help="该角色可见的全部图层（无则匿名，仅公开图层） layers this role may see")
    s.add_argument("--authcfg", help="QGIS 认证配置 ID（7 个字母或数字，默认 lfgis01；项目中不含密钥） "
                                     "QGIS authentication configuration id (default lfgis01); the key is never written")
    s.add_argument("--output", required=True, help="输出文件 output file (.qgz or .qgs)")
    s.add_argument("--url", help="服务地址 service URL (default http://GIS_HOST:GIS_PORT)")
    s.add_argument("--large-features", type=int,
                   help="超过此要素数的图层只请求视野范围（默认见 qgis.LARGE_FEATURES） layers above this many "
                        "features request only the view extent")
    s.set_defaults(func=cmd_qgis_project)
    s = sub.add_parser("db", help="PostgreSQL/PostGIS 数据库 the PostgreSQL store (GIS_DATABASE_URL)")
    s.add_argument("action", choices=["init", "migrate", "load", "status", "rules"],
                   help="rules: 将 var/rules.local.toml 存入数据库 store the local rule overrides in the database")
    s.add_argument("--url", help="postgresql://… (默认 GIS_DATABASE_URL)")
    s.add_argument("--layer", action="append", help="load: 只载入这些图层 only these layers (repeatable)")
    s.add_argument("--build", action="store_true", help="load: 直接在数据库中生成图层 generate the layers in the database")
    s.add_argument("--plots", type=int, help="load --build: 演示地块数 demo plots")
    s.set_defaults(func=cmd_db)
    for name in _domain_names():  # gis-service land import … (Domain.commands, loaded when run)
        if name in sub.choices:
            continue
        s = sub.add_parser(name, help=f"{name} 领域命令（gis-service {name} --help） domain commands", add_help=False)
        s.add_argument("rest", nargs=argparse.REMAINDER)
        s.set_defaults(func=cmd_domain)
    return p


def main(argv=None) -> int:
    args, extra = parser().parse_known_args(argv)
    if args.func is cmd_domain:  # the domain parses its own options (a leading --help lands in extra)
        args.rest = extra + args.rest
    elif extra:
        parser().error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "keys" and args.action in ("add", "revoke") and not args.name:
        parser().error("keys add/revoke 需要 --name")
    if args.command == "keys" and args.action == "add" and not args.role:
        parser().error("keys add 需要 --role")
    try:
        args.func(args)
    except GisError as exc:
        print(f"错误 error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
