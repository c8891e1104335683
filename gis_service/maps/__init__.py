"""Folium map builders. Every page comes from the one factory in ``factory.py``."""
