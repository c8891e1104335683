"""Registration of the admin example domain; the application discovers this file (gis_service/domains.py)."""

from ..domains import Domain, MapPage
from . import pages, router

DOMAIN = Domain(
    name="admin",
    title_zh="行政区划与位置查询",
    title_en="Administrative divisions and place lookup",
    router=router.router,
    pages=(MapPage("", "位置查询（所在县区、乡镇、最近村庄）", pages.where_map,
                   "点击地图任意位置，查看所在县区、推断乡镇与最近村庄"),),
)
