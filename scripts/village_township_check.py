"""Write layers/canal/villages_township_check.md: the 2016 village list's townships against the 2023 table.

    python scripts/village_township_check.py

tests/test_demo_layers.py fails when the committed report differs from what this writes."""

from gis_service import demo
from gis_service.config import REPO_ROOT

REPORT = REPO_ROOT / "layers" / "canal" / "villages_township_check.md"

if __name__ == "__main__":
    REPORT.write_text(demo.village_township_check(demo.load_base(REPO_ROOT / "layers")), encoding="utf-8")
    print(REPORT)
