"""Registration of the canal domain; the application discovers this file (gis_service/domains.py)."""

from ..domains import Domain, MapPage
from . import control_zones, pages, router
from .service import service_for


def derive(ctx):
    """The canal zones as the derived layer canal_zones (an OGC collection), recomputed at start-up."""
    return {**service_for(ctx).derived_layers(), **control_zones.derive(ctx)}  # + planners' control zones


DOMAIN = Domain(
    name="canal",
    title_zh="大运河文化带管控",
    title_en="Grand Canal corridor control",
    router=router.router,
    derive=derive,
    pages=(MapPage("", "大运河规划管控", pages.canal_map,
                   "河道与流向、管控分区、沿河村庄、文物保护范围、绿廊不足河段；绘制项目查看选址判定，保存规划管控区"),),
)
