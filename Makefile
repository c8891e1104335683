# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PLOTS  ?= 100000

.PHONY: run test install assets layers system-deps bench clean

run: install layers
	GIS_HOST=$(HOST) GIS_PORT=$(PORT) $(BIN)/gis-service serve

test: install system-deps layers
	$(BIN)/python -m pytest -q

install: $(VENV)/.installed assets

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Leaflet and plugins from npm, served under /static (pages never load from a CDN).
assets: frontend/node_modules/.installed

frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	touch $@

layers: install
	$(BIN)/gis-service build-layers --plots $(PLOTS)

# Debian packages the tests use: GDAL's OGC client, a real browser, CJK fonts for screenshots, and PostgreSQL
# with PostGIS (the tests start a throwaway cluster on loopback from these binaries; no Docker), and QGIS 3.22
# (PyQGIS in Debian's /usr/bin/python3 and its OGC API – Features provider, run headless by tests/qgis).
system-deps:
	@missing=""; \
	[ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$$missing postgresql"; \
	[ -f /usr/share/postgresql/15/extension/postgis.control ] || missing="$$missing postgresql-15-postgis-3"; \
	command -v ogrinfo >/dev/null || missing="$$missing gdal-bin"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	fc-list 2>/dev/null | grep -q "Noto Sans CJK" || missing="$$missing fonts-noto-cjk"; \
	/usr/bin/python3 -c "import qgis.core" 2>/dev/null || missing="$$missing python3-qgis"; \
	[ -f /usr/lib/qgis/plugins/libprovider_wfs.so ] || missing="$$missing qgis-providers"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

bench: install layers
	$(BIN)/python scripts/bench_features.py

clean:
	rm -rf $(VENV) frontend/node_modules layers/*/*.gpkg layers/*/*.tif var test-output
