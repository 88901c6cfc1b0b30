"""mxplain.report_compare: ``mxplain report RUN --compare OTHER``, the forward sensitivities of two
runs side by side on the lots and attributes they share."""

import pytest
from report_runs import make_run, sensitivity_cube

from mxplain.errors import UserError
from mxplain.report import write_report
from mxplain.report_compare import sensitivity_comparison


def test_compare_two_runs_side_by_side(tmp_path):
    truth = [[-300.0, 75.0]] * 4
    this = make_run(tmp_path / "a")
    sensitivity_cube(this, [[-90, 5], [-80, -4], [-70, 3], [-60, 2]], truth)
    other = make_run(tmp_path / "b")
    sensitivity_cube(other, [[-50, -1], [-40, -2], [10, 3], [-20, -4]], truth, lots=("L0", "L1", "L2", "L9"))
    comp = sensitivity_comparison(this, other)
    assert comp["lots"] == 3  # L0..L2 are shared
    size, poro = comp["attributes"]["size"], comp["attributes"]["porosity"]
    assert size["truth_sign_agreement_this"] == 1.0
    assert size["truth_sign_agreement_other"] == pytest.approx(2 / 3)
    assert size["sign_agreement_between_runs"] == pytest.approx(2 / 3)
    assert poro["truth_sign_agreement_this"] == pytest.approx(2 / 3)
    assert poro["sign_agreement_between_runs"] == pytest.approx(2 / 3)
    assert comp["mean_truth_sign_agreement_this"] == pytest.approx(5 / 6)
    page = write_report(this, compare=other)
    assert page.name == "compare-run.html"  # its own page; the run's report is not replaced
    html = page.read_text()
    assert "Compared with" in html and "lots where the runs agree in sign" in html
    assert html.count("data:image/png;base64,") == 3  # the two run figures + the comparison
    with pytest.raises(UserError, match="no forward sensitivities|no results.zarr"):
        sensitivity_comparison(this, make_run(tmp_path / "c"))


def test_medians_and_rank_correlation_between_runs(tmp_path):
    truth = [[-300.0, 75.0]] * 3
    this = make_run(tmp_path / "a")
    sensitivity_cube(this, [[-90, 5], [-80, -4], [-70, 3]], truth, lots=("L0", "L1", "L2"))
    other = make_run(tmp_path / "b")
    sensitivity_cube(other, [[-50, -1], [-40, -2], [10, 3]], truth, lots=("L0", "L1", "L2"))
    size, poro = (sensitivity_comparison(this, other)["attributes"][a] for a in ("size", "porosity"))
    assert (size["median_this"], size["median_other"]) == (-80.0, -40.0)
    assert size["spearman_between_runs"] == pytest.approx(1.0)
    assert poro["spearman_between_runs"] == pytest.approx(0.5)  # ranks 3 1 2 against 2 1 3
    assert sensitivity_comparison(this, this)["mean_sign_agreement_between_runs"] == 1.0


def test_runs_that_share_no_lots_are_one_error(tmp_path):
    truth = [[-300.0, 75.0]] * 2
    this = make_run(tmp_path / "a")
    sensitivity_cube(this, [[-1, 1], [-1, 1]], truth, lots=("L0", "L1"))
    other = make_run(tmp_path / "b")
    sensitivity_cube(other, [[-1, 1], [-1, 1]], truth, lots=("M0", "M1"))
    with pytest.raises(UserError, match="share no lots and attributes"):
        sensitivity_comparison(this, other)
    with pytest.raises(UserError, match="has no results.zarr to compare"):
        sensitivity_comparison(this, tmp_path / "nothing")
