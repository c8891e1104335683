"""Plain HTML views of the OGC documents (f=html). Every value is escaped."""

from __future__ import annotations

import json
from html import escape

_STYLE = ("body{font-family:'Noto Sans CJK SC','Microsoft YaHei',sans-serif;margin:24px;color:#222}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
          "th{background:#f3f3f3}a{color:#08519c}")


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>{body}"
            '<p><a href="/maps/">地图首页</a> · <a href="/ogc">服务首页</a></p></body></html>')


def _links(links: list[dict]) -> str:
    return "<ul>" + "".join(f'<li><a href="{escape(l["href"])}">{escape(l["title"])}</a> ({escape(l["rel"])})</li>'
                            for l in links) + "</ul>"


def landing(doc: dict) -> str:
    return page(doc["title"], f"<p>{escape(doc['description'])}</p>{_links(doc['links'])}")


def conformance(doc: dict) -> str:
    return page("符合性声明 Conformance", "<ul>" + "".join(f"<li>{escape(c)}</li>" for c in doc["conformsTo"]) + "</ul>")


def collections(doc: dict) -> str:
    rows = "".join(
        f'<tr><td><a href="/ogc/collections/{escape(c["id"])}?f=html">{escape(c["id"])}</a></td>'
        f'<td>{escape(c["title"])}</td><td>{escape(c["access"])}</td><td>{"是" if c["demo"] else "否"}</td>'
        f'<td><a href="/maps/layers/{escape(c["id"])}">地图</a></td></tr>' for c in doc["collections"])
    return page("要素集合", f"<table><tr><th>标识</th><th>名称</th><th>访问级别</th><th>演示数据</th><th></th></tr>{rows}</table>")


def collection(doc: dict) -> str:
    extent = escape(json.dumps(doc.get("extent", {}), ensure_ascii=False))
    return page(doc["title"], f"<p>{escape(doc['description'])}</p><p>范围：{extent}</p>"
                              f'<p><a href="/maps/layers/{escape(doc["id"])}">在地图上查看</a></p>{_links(doc["links"])}')


def queryables(doc: dict) -> str:
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v.get('title', ''))}</td><td>{escape(str(v.get('type', '')))}</td></tr>"
                   for k, v in doc["properties"].items())
    return page(f"{doc['title']} 可查询字段", f"<table><tr><th>字段</th><th>名称</th><th>类型</th></tr>{rows}</table>")


def items(summary: dict) -> str:
    layer = summary["layer"]
    fids, properties = summary["page"].fids, summary["page"].properties
    names = list(properties[0]) if properties else []
    head = "".join(f"<th>{escape(layer.field(n).label)}</th>" for n in names)
    rows = "".join(
        f'<tr><td><a href="/ogc/collections/{escape(layer.id)}/items/{fid}?f=html">{fid}</a></td>'
        + "".join(f"<td>{escape('' if p[n] is None else str(p[n]))}</td>" for n in names) + "</tr>"
        for fid, p in zip(fids, properties))
    nav = " ".join(f'<a href="{escape(l["href"] + "&f=html")}">{escape(l["title"])}</a>'
                   for l in summary["links"] if l["rel"] in ("prev", "next"))
    info = f"<p>共 {summary['matched']} 个要素，本页从第 {summary['offset'] + 1} 个起 {len(fids)} 个。{nav}</p>"
    return page(f"{layer.title_zh} 要素", f"{info}<table><tr><th>ID</th>{head}</tr>{rows}</table>")


def feature(body: bytes) -> str:
    doc = json.loads(body)
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape('' if v is None else str(v))}</td></tr>"
                   for k, v in doc["properties"].items())
    return page(f"要素 {doc['id']}", f"<table>{rows}</table>")
