"""Registration of the environmental emergency domain; the application discovers this file (gis_service/domains.py)."""

from ..domains import Domain, MapPage
from . import pages, router
from .service import KEY_AREAS_LAYER, RINGS_LAYER, service_for


def derive(ctx):
    """The risk rings and the key risk areas as derived layers (OGC collections), recomputed at start-up."""
    service = service_for(ctx)
    return {RINGS_LAYER: service.rings_layer(), KEY_AREAS_LAYER: service.key_areas()}


DOMAIN = Domain(
    name="environment",
    title_zh="突发环境事件应急",
    title_en="Environmental emergencies",
    router=router.router,
    derive=derive,
    pages=(MapPage("", "突发环境事件应急图", pages.environment_map,
                   "风险源及周边环、敏感目标、饮用水水源地与保护区；单击地图评估事件（大气烟羽、河流追踪、半径），分级与响应"),
           MapPage("key-areas", "突发环境风险重点区域（附件4）", pages.key_areas_map,
                   "1公里网格风险指数（高、中、低），方法与数据日期"),
           MapPage("incident", "突发环境事件评估报告", pages.incident_report,
                   "打印版（A4）事件报告：在地址后加 ?id=事件编号")),
)
