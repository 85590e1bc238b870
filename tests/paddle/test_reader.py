from fractions import Fraction

import pytest

from prodrec.config import ConfigError
from prodrec.paddle import Notes, Section, parse_number


@pytest.mark.parametrize("text, value", [
    ("1.0/255.0", 1 / 255), ("0.00392157", 0.00392157), ("-1/4", -0.25), ("2*3-1", 5.0), ("+(1+2)/3", 1.0),
    (" 0.5 ", 0.5), (3, 3.0), (0.25, 0.25),
])
def test_parse_number_computes_arithmetic_strings(text, value):
    assert parse_number(text, "k") == value


def test_parse_number_is_exact_before_rounding():
    assert 1 / 49 * 49 == 0.9999999999999999  # float arithmetic rounds at every step
    assert parse_number("1/49*49", "k") == 1.0
    assert parse_number("1.0/255.0", "k") == float(Fraction(1, 255))


@pytest.mark.parametrize("text", [
    "__import__('os')", "__import__('os').system('true')", "open('x')", "x", "2**10", "1/0", "1e999", "abs(-1)",
    "[1]", "'1'", "1 if 1 else 0", "", "(" * 500 + "1" + ")" * 500, True, None, [1],
])
def test_parse_number_refuses_everything_else(text):
    with pytest.raises(ConfigError, match=r"^k: "):
        parse_number(text, "k")


def test_section_reports_unread_keys_and_bad_values():
    notes = Notes()
    section = Section({"a": 1, "b": "1.0/2", "c": "x", "d": None, "unused": 0, "child": {"e": 1}}, "S", notes)
    assert section.get("a") == 1 and section.number("b", text=True) == 0.5
    assert section.number("c", 7) == 7 and section.get("d", "default") == "default"
    assert section.child("child").get("e") == 1 and "child" in section and "zzz" not in section
    section.finish()
    assert notes.warnings == ["S.unused: not used by prodrec (ignored)"]
    assert notes.errors == ["S.c: expected a number, got 'x'"]
    with pytest.raises(ConfigError, match=r"T: 1 problem\(s\) prodrec cannot translate:\n  S.c: expected a number"):
        notes.raise_errors("T")


def test_section_of_a_non_mapping_is_an_error():
    notes = Notes()
    assert Section([1], "S", notes).data == {} and notes.errors == ["S: expected a mapping, got [1]"]
    Notes().raise_errors("nothing to raise")
