"""The example domain: where is a point — county, township, nearest village (see gis_service/domains.py)."""
