"""Registration of the rural contracted-land domain; the application discovers this file (gis_service/domains.py)."""

from ..domains import Domain, MapPage
from . import imports, pages, register, router

DOMAIN = Domain(
    name="land",
    title_zh="农村承包地管理",
    title_en="Rural contracted land",
    router=router.router,
    commands=imports.add_commands,  # gis-service land import FILE | --rollback
    imports={imports.PLOTS: "import"},  # the generic `gis-service import plots` is refused
    database_load=register.database_load,  # the register into the database's schema land_register
    pages=(MapPage("", "农村承包地一张图", pages.land_map, "全市承包地块（矢量瓦片）、流转与抵押状态、村级汇总、按地块编码查询"),),
)
