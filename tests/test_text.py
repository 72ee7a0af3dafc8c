"""Wording of messages: counts with their nouns."""

import pytest

from hstcosmicrays._text import plural


@pytest.mark.parametrize("n, words", [(0, "0 months"), (1, "1 month"), (2, "2 months"), (-1, "-1 months")])
def test_a_count_of_one_takes_the_singular(n, words):
    assert plural(n, "month") == words


def test_irregular_plurals_and_numpy_counts():
    import numpy as np

    assert plural(1, "try", "tries") == "1 try" and plural(3, "try", "tries") == "3 tries"
    assert plural(np.int64(1), "CR") == "1 CR" and plural(np.int64(5), "CR") == "5 CRs"
    assert plural(2, "worker process", "worker processes") == "2 worker processes"
