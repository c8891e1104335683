"""NY/T 2539 code validation and the GB 11643 ID check digit."""

import pytest

from gis_service.errors import GisError
from gis_service.land import codes

FBFBM = "13102210101001"  # 固安县 131022 + township 101 + village 010 + group 01


def test_valid_codes_pass_and_are_normalised():
    assert codes.validate_fbfbm(FBFBM, county_adcode=131022) == FBFBM
    assert codes.validate_cbfbm(FBFBM + "0007", fbfbm=FBFBM) == FBFBM + "0007"
    assert codes.validate_dkbm(" " + FBFBM + "00123 ", county_adcode="131022") == FBFBM + "00123"


@pytest.mark.parametrize("validator,code", [
    (codes.validate_dkbm, FBFBM + "0012"),      # 18 chars: one short
    (codes.validate_dkbm, FBFBM + "001234"),    # 20 chars
    (codes.validate_dkbm, FBFBM + "0012A"),     # letter
    (codes.validate_cbfbm, FBFBM + "007"),
    (codes.validate_cbfbm, FBFBM + "00 7"),
    (codes.validate_fbfbm, FBFBM[:-1]),
    (codes.validate_fbfbm, 13102210101001),    # not a string
])
def test_malformed_codes_rejected(validator, code):
    with pytest.raises(GisError) as err:
        validator(code)
    assert err.value.code == "bad_code" and err.value.status == 422


def test_county_must_match_the_plot_county():
    with pytest.raises(GisError) as err:
        codes.validate_dkbm(FBFBM + "00001", county_adcode=131023)  # 永清县
    assert "131023" in err.value.message
    with pytest.raises(GisError):
        codes.validate_fbfbm(FBFBM, county_adcode="131081")
    with pytest.raises(GisError):
        codes.validate_cbfbm(FBFBM + "0001", county_adcode=131002)


def test_code_must_begin_with_its_employer():
    with pytest.raises(GisError):
        codes.validate_dkbm(FBFBM + "00001", fbfbm="13102210101002")
    with pytest.raises(GisError):
        codes.validate_cbfbm(FBFBM + "0001", fbfbm="13102210101002")
    assert codes.fbfbm_of(FBFBM + "00001") == FBFBM == codes.fbfbm_of(FBFBM + "0001")


@pytest.mark.parametrize("number", [
    "11010519491231002X",  # the worked example of GB 11643-1999
    "440524188001010014",  # the second example of the standard
])
def test_id_numbers_from_the_standard_pass(number):
    assert codes.validate_id_number(number.lower()) == number


def _check_by_hand(body):
    # ISO 7064 MOD 11-2: weights 2^(17-i) mod 11, check = (12 - sum mod 11) mod 11, 10 written as X
    s = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(body)) % 11
    v = (12 - s) % 11
    return "X" if v == 10 else str(v)


def test_check_digit_matches_iso_7064_for_many_bodies():
    import random
    rnd = random.Random(4)
    for _ in range(500):
        body = "".join(rnd.choice("0123456789") for _ in range(17))
        assert codes.id_check_digit(body) == _check_by_hand(body)
        assert codes.is_valid(codes.validate_id_number, body + _check_by_hand(body))


@pytest.mark.parametrize("number", ["110105194912310021", "11010519491231002", "1101051949123100XX", None])
def test_bad_id_numbers_rejected(number):
    assert not codes.is_valid(codes.validate_id_number, number)
