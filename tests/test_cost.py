import numpy as np
import pytest

from csrs_core.certification.cost import CostMatrix, CostMatrixError, parse_cost


def test_presets_and_omega():
    assert CostMatrix.overall(4).omega(2) == [0, 1, 3]
    s = CostMatrix.seedwise(10, seeds=[3])
    assert s.omega(3) == [0, 1, 2, 4, 5, 6, 7, 8, 9] and s.omega(2) == []
    p = CostMatrix.pairwise(10, {3: [2, 4, 5]})
    assert p.omega(3) == [2, 4, 5]
    assert p.sensitive_mask([3, 2, 3]).tolist() == [True, False, True]


@pytest.mark.parametrize("matrix, words", [
    ([[0, 1, 0]], "square"),
    ([[0, -1], [0, 0]], r"must lie in \[0, 1e\+09\]"),
    ([[0, float("nan")], [0, 0]], "finite"),
    ([[1, 0], [0, 0]], "diagonal"),
    ([["a", 0], [0, 0]], "numeric"),
    ([[0]], "at least 2"),
])
def test_invalid_matrices_name_the_problem(matrix, words):
    with pytest.raises(CostMatrixError, match=words):
        CostMatrix(matrix)


def test_class_count_checks():
    with pytest.raises(CostMatrixError, match="class names"):
        CostMatrix.overall(3, class_names=["a", "b"])
    with pytest.raises(CostMatrixError, match="out of range"):
        CostMatrix.seedwise(3, [3])
    with pytest.raises(CostMatrixError, match="has 10 classes but the data/model has 2"):
        parse_cost(CostMatrix.overall(10).to_json(), 2)
    with pytest.raises(CostMatrixError, match="labels range"):
        CostMatrix.overall(3).sensitive_mask([0, 5])


def test_json_round_trip_with_names():
    c = CostMatrix.pairwise(3, {1: [0]}, class_names=["a", "b", "c"])
    d = CostMatrix.from_json(c.to_json())
    assert d == c and d.class_names == ["a", "b", "c"]
    with pytest.raises(CostMatrixError, match="parsed"):
        CostMatrix.from_json("{not json")


def test_parse_presets_and_files(tmp_path):
    assert parse_cost("seedwise:2,4", 10) == CostMatrix.seedwise(10, [2, 4])
    assert parse_cost("pairwise:3>2,4,5", 10) == CostMatrix.pairwise(10, {3: [2, 4, 5]})
    assert parse_cost("pairwise:3>5;1>0", 10) == CostMatrix.pairwise(10, {3: [5], 1: [0]})
    assert parse_cost("pairwise:3>5;1>0", 10).describe() == "pairwise:1>0;3>5"
    assert CostMatrix([[0, 2], [0.5, 0]]).omega(0) == [1]           # real costs: Omega_y is the support
    f = tmp_path / "c.json"
    f.write_text(CostMatrix.seedwise(10, [1]).to_json())
    assert parse_cost(str(f), 10) == CostMatrix.seedwise(10, [1])
    for bad in ("seedwise:x", "pairwise:3", "nonsense", "pairwise:3>3"):
        with pytest.raises(CostMatrixError):
            parse_cost(bad, 10)
    assert parse_cost("overall", 3).describe() == "overall"
    assert np.array_equal(parse_cost("none", 3).matrix, np.zeros((3, 3), bool))


def test_a_matrix_reads_in_words():
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert parse_cost("seedwise:0,1=10", 10, names).in_words() == (
        "a true airplane predicted as any other class costs 1; a true automobile predicted as any other class "
        "costs 10; every other prediction costs 0")
    assert parse_cost("pairwise:3>5", 10, names).in_words().startswith("a true cat predicted as dog costs 1;")
    assert parse_cost("pairwise:3>5=2,4=6", 10, names).in_words().startswith("a true cat predicted as deer, dog costs 2 to 6")
    assert parse_cost("overall", 10, names).in_words().startswith("every mistake costs 1")
    assert parse_cost("none", 10, names).in_words() == "no mistake costs anything"
    assert "and 2 more true classes" in parse_cost("seedwise:0,1,2,3,4", 10, names).in_words()
