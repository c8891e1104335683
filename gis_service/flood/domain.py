"""Registration of the urban flood domain; the application discovers this file (gis_service/domains.py)."""

from ..domains import Domain
from . import router

DOMAIN = Domain(
    name="flood",
    title_zh="城区防汛指挥",
    title_en="Urban flood command",
    router=router.router,
)
