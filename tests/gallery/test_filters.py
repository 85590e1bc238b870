import numpy as np
import pytest

from prodrec.gallery import parse_filter

COLUMNS = {"id": np.array([0, 1, 2, 3]), "label": np.array(["cola", "cola", "tea", "milk"], dtype=object),
           "name": np.array(["Cola", None, "Tea", None], dtype=object),
           "path": np.array(["a.jpg", "b.jpg", None, "d.jpg"], dtype=object)}


@pytest.mark.parametrize("expression, expected", [
    ('label in ["tea", "milk"]', [False, False, True, True]),
    ('label not in ["tea", "milk"]', [True, True, False, False]),
    ('label == "cola" and id > 0', [False, True, False, False]),
    ('label == "tea" or id <= 0', [True, False, True, False]),
    ('not (name == "")', [True, False, True, False]),
    ('name == ""', [False, True, False, True]),
    ("id != 2", [True, True, False, True]),
    ('path == "" or (label == "milk" and id >= 3)', [False, False, True, True]),
    ("id in [1, 3, 99]", [False, True, False, True]),
    ("label == 'cola'", [True, True, False, False]),
])
def test_filters_select_the_rows_worked_out_by_hand(expression, expected):
    where = parse_filter(expression)
    assert where.expression == expression
    assert where.mask(COLUMNS).tolist() == expected


@pytest.mark.parametrize("expression, message", [
    ("label ==", "cannot parse"),
    ('shop == "x"', "unknown field 'shop'"),
    ("label == 3", "takes a quoted string"),
    ('id == "3"', "takes an integer"),
    ('label in "abc"', "takes a list"),
    ("1 < id < 3", "not a comparison of one field"),
    ("label", "not a comparison of one field"),
    ("  ", "non-empty"),
    ('label == "a"; import os', "cannot parse"),
])
def test_bad_filters_are_refused_with_what_is_allowed(expression, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_filter(expression)
    assert "fields: id, label, name, path" in str(error.value)
