"""Report sections from the explainers (mxplain.report_sections, issue 18 item 5): the default
section, an explainer whose plugin is not installed, sections sharing a title shown as one, and
the documented examples."""

import json
import re
from pathlib import Path

import pytest

from mxplain.report import write_report
from mxplain.report_sections import ReportInput, ReportSection, default_section, scalar_rows

ROOT = Path(__file__).resolve().parents[2]
PIXEL = "Pixel vs attribute explanations (GradCAM, Integrated Gradients)"


def test_default_section_rounds_nothing_itself_and_skips_nested_and_empty_values():
    block = {"score": 0.123456, "n": 3, "ok": True, "note": "", "nan": float("nan"),
             "nested": {"a": 1}, "figures": ["x.png"], "name": "sweep"}
    assert scalar_rows(block) == [("score", 0.123456), ("n", 3), ("ok", True), ("name", "sweep")]
    figs = [Path("f/ghost_a.png"), Path("f/ghostly.png"), Path("f/other_ghost_b.png")]
    run = ReportInput(name="ghost", metrics=block, run_dir=Path("."), figures=figs)
    assert default_section(run) == ReportSection("ghost", tables=[scalar_rows(block)],
                                                 figures=[Path("f/ghost_a.png")])
    empty = ReportInput(name="ghost", metrics={"nested": {"a": 1}}, run_dir=Path("."),
                        figures=[Path("f/other.png")])
    assert default_section(empty) is None


def _figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)


def _run(root: Path, explain: dict, figures) -> Path:
    run = root / "run"
    for name in figures:
        _figure(run / "figures" / name)
    metrics = {"data": {"lots": 2}, "explain": explain,
               "provenance": {"config": {"predictor": {"name": "wideresnet"},
                                         "explain": {k: {} for k in explain}}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_an_explainer_not_installed_here_gets_the_default_section(tmp_path):
    run = _run(tmp_path, {"ghost": {"score": 0.123456, "lots": 2}}, ["ghost_map.png"])
    html = write_report(run, redraw=False).read_text(encoding="utf-8")
    section = html[html.index("<h2>ghost</h2>"):html.index("<h2>Run summary")]
    assert "<tr><th>score</th><td>0.123</td></tr><tr><th>lots</th><td>2</td></tr>" in section
    assert section.count("<img") == 1 and 'alt="ghost_map"' in section
    assert "<h2>Other figures</h2>" not in html


def test_sections_sharing_a_title_are_one_with_figures_in_name_order(tmp_path):
    run = _run(tmp_path, {"gradcam": {"seconds_per_tile": 0.5}, "compare": {"mean_spearman": 0.25}},
               ["overlay_L0_0.png", "gradcam_lot_mean.png", "compare_faithfulness.png"])
    html = write_report(run, redraw=False).read_text(encoding="utf-8")
    assert html.count(f"<h2>{PIXEL}</h2>") == 1
    section = html[html.index(f"<h2>{PIXEL}</h2>"):html.index("<h2>Run summary")]
    assert re.findall(r'alt="([^"]+)"', section) == ["compare_faithfulness", "gradcam_lot_mean",
                                                     "overlay_L0_0"]
    assert section.index("seconds_per_tile") < section.index("mean_spearman")


@pytest.mark.parametrize("doc", ["report.md", "plugins.md"])
def test_the_documented_examples_run(doc):
    text = (ROOT / "docs" / doc).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, doc, "exec"), {"__name__": "docs_example"})
