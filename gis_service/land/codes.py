"""NY/T 2539 code validation for the rural land register: 发包方 FBFBM, 承包方 CBFBM, 地块 DKBM, and resident
ID numbers (GB 11643 check digit).

Coding (field-notes §4.3): FBFBM is 14 digits and starts with the 6-digit county adcode (县), followed by the
township (3) and village (3) segments and a 2-digit group (组); DKBM = FBFBM + 5-digit plot sequence (19);
CBFBM = FBFBM + 4-digit household sequence (18). Every validator returns the normalised code or raises
``GisError("bad_code", ...)`` naming the field and the fault in Chinese and English.
"""

from __future__ import annotations

import re

from gis_service.errors import GisError, shown

FBFBM_LEN, CBFBM_LEN, DKBM_LEN = 14, 18, 19
ADCODE_LEN = 6
_DIGITS = re.compile(r"^[0-9]+$")

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECKS = "10X98765432"


def _bad(field: str, value, zh: str, en: str) -> GisError:
    return GisError("bad_code", f"{field} {shown(value)} 无效：{zh}", f"invalid {field} {shown(value)}: {en}", 422)


def _digits(field: str, code, length: int) -> str:
    if not isinstance(code, str):
        raise _bad(field, code, "应为字符串", "must be a string")
    code = code.strip()
    if len(code) != length:
        raise _bad(field, code, f"应为 {length} 位（实为 {len(code)} 位）",
                   f"must have {length} characters (has {len(code)})")
    if not _DIGITS.match(code):
        raise _bad(field, code, "只能含数字", "must contain digits only")
    return code


def _county(field: str, code: str, county_adcode) -> None:
    if county_adcode is None:
        return
    expected = str(county_adcode).strip()
    if code[:ADCODE_LEN] != expected:
        raise _bad(field, code, f"前 6 位 {code[:ADCODE_LEN]} 与地块所在县 {expected} 不符",
                   f"first 6 digits {code[:ADCODE_LEN]} do not match the county the plot lies in ({expected})")


def _code(field: str, code, length: int, county_adcode=None, fbfbm=None) -> str:
    code = _digits(field, code, length)
    _county(field, code, county_adcode)
    if fbfbm is not None and code[:FBFBM_LEN] != str(fbfbm):
        raise _bad(field, code, f"前 14 位应为发包方编码 {fbfbm}", f"first 14 digits must be the employer code {fbfbm}")
    return code


def validate_fbfbm(code, county_adcode=None) -> str:
    """发包方编码: 14 digits beginning with the county adcode (when given, it must match)."""
    return _code("FBFBM 发包方编码", code, FBFBM_LEN, county_adcode)


def validate_cbfbm(code, fbfbm=None, county_adcode=None) -> str:
    """承包方编码: FBFBM + 4 digits; when ``fbfbm`` is given the code must begin with it."""
    return _code("CBFBM 承包方编码", code, CBFBM_LEN, county_adcode, fbfbm)


def validate_dkbm(code, county_adcode=None, fbfbm=None) -> str:
    """地块编码: FBFBM + 5 digits; the FBFBM part must start with ``county_adcode`` when given."""
    return _code("DKBM 地块编码", code, DKBM_LEN, county_adcode, fbfbm)


def fbfbm_of(code: str) -> str:
    """The employer (发包方) part of a DKBM or CBFBM."""
    return code[:FBFBM_LEN]


def id_check_digit(body17: str) -> str:
    """GB 11643 check character for the first 17 digits of a resident ID number."""
    return ID_CHECKS[sum(int(c) * w for c, w in zip(body17, ID_WEIGHTS)) % 11]


def validate_id_number(number) -> str:
    """18-character resident ID number: 17 digits + check character (0-9 or X) per GB 11643."""
    if not isinstance(number, str):
        raise _bad("身份证号 ID number", number, "应为字符串", "must be a string")
    number = number.strip().upper()
    if len(number) != 18 or not _DIGITS.match(number[:17]) or not re.match(r"^[0-9X]$", number[17]):
        raise _bad("身份证号 ID number", number, "应为 17 位数字加 1 位校验码", "must be 17 digits and a check character")
    if id_check_digit(number[:17]) != number[17]:
        raise _bad("身份证号 ID number", number, "校验码错误", "check digit wrong")
    return number


def is_valid(validator, *args, **kwargs) -> bool:
    """True when ``validator(*args, **kwargs)`` accepts the code (for bulk checks that count faults)."""
    try:
        validator(*args, **kwargs)
    except GisError:
        return False
    return True
