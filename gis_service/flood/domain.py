"""Registration of the urban flood domain; the application discovers this file (gis_service/domains.py)."""

from ..domains import Domain, MapPage
from . import pages, router

DOMAIN = Domain(
    name="flood",
    title_zh="城区防汛指挥",
    title_en="Urban flood command",
    router=router.router,
    pages=(MapPage("", "城区防汛指挥图", pages.flood_map, "易涝点与下穿立交实时状态、断交清单、降雨情景"),),
)
