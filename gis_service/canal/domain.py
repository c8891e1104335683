"""Registration of the canal domain; the application discovers this file (gis_service/domains.py)."""

from ..domains import Domain
from . import router
from .service import service_for


def derive(ctx):
    """The canal zones as the derived layer canal_zones (an OGC collection), recomputed at start-up."""
    return service_for(ctx).derived_layers()


DOMAIN = Domain(
    name="canal",
    title_zh="大运河文化带管控",
    title_en="Grand Canal corridor control",
    router=router.router,
    derive=derive,
)
