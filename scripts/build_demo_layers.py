"""Build the layers: import the real ones, generate the seeded demo ones (same as `gis-service build-layers`).

    python scripts/build_demo_layers.py [--plots N] [--force]
"""

import sys

from gis_service.cli import main

if __name__ == "__main__":
    sys.exit(main(["build-layers", *sys.argv[1:]]))
