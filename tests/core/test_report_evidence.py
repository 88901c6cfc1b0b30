"""mxplain.report_evidence: the report's evidence sections (predictor, editor with its realism
test, each explainer's own section, texture), titled from the components the run used, greyed
with the reason where the trust gates fail an explainer."""

from __future__ import annotations

from pathlib import Path

from mxplain.report_evidence import evidence, explainer_sections, render_section
from mxplain.report_sections import ReportSection

COMPONENTS = {"data": "synthetic", "predictor": "wideresnet", "editor": "attgan"}
REALISM = {"realism": {"reconstruction": {"auc": 0.61, "auc_ci": [0.5, 0.7], "train_auc": 0.9,
                                          "n_train": 40, "n_test": 20},
                       "edits": {"auc": 0.75}},
           "realism_ceiling": {"skipped": "the data has no generator"}}


def _figures(tmp_path, *names):
    (tmp_path / "figures").mkdir(exist_ok=True)
    out = []
    for n in names:
        (tmp_path / "figures" / n).write_bytes(b"\x89PNG " + n.encode())
        out.append(tmp_path / "figures" / n)
    return sorted(out, key=lambda p: p.name)


def _metrics(**extra):
    return {"predictor": {"val_mape": 2.34567, "per_lot": {"L0": 1.0}},
            "editor": {"epochs": 3, "evaluation": REALISM},
            "provenance": {"config": {k: {"name": v} for k, v in COMPONENTS.items()}}, **extra}


def test_a_section_renders_escaped_rounded_and_greyed_when_untrusted(tmp_path):
    (fig,) = _figures(tmp_path, "x_a.png")
    section = ReportSection("A <b>", paragraphs=["p & q"], tables=[[("mape", 2.34567, None)], []],
                            figures=[fig])
    parts = render_section(section)
    assert parts[:2] == ["<h2>A &lt;b&gt;</h2>", "<p>p &amp; q</p>"]
    assert "<tr><th>mape</th><td>2.35</td><td>–</td></tr>" in parts[2] and len(parts) == 4
    assert "<figcaption>x_a.png</figcaption>" in parts[3]
    grey = render_section(section, "forward fails attribute_probe")
    assert grey[1] == ("<p class='trust-note'>Untrusted: forward fails independent attribute "
                       "probe</p><div class='untrusted'>") and grey[-1] == "</div>"


def test_model_sections_titled_from_the_components_with_the_realism_table(tmp_path):
    figs = _figures(tmp_path, "predictor_per_lot.png", "attgan_grid.png", "texture_map.png",
                    "unrelated.png")
    parts, used = evidence(tmp_path, _metrics(), figs)
    html = "".join(parts)
    heads = [p for p in parts if p.startswith("<h2>")]
    assert heads == ["<h2>Predictor accuracy: wideresnet</h2>", "<h2>Editor: attgan</h2>",
                     "<h2>Texture features of wideresnet (after Ling et al. 2017)</h2>"]
    assert "<th>val_mape</th><td>2.35</td>" in html and "<th>per_lot" not in html
    assert "<td>editor</td><td>reconstruction</td><td>0.610</td><td>0.500 – 0.700</td>" in html
    assert "<td>edits</td><td>0.750</td><td>? – ?</td>" in html
    assert "skipped: the data has no generator" in html
    assert parts.index("<h2>Editor: attgan</h2>") + 1 == parts.index(
        next(p for p in parts if p.startswith("<h3>Realism")))  # right under the editor's title
    assert {p.name for p in used} == {"predictor_per_lot.png", "attgan_grid.png", "texture_map.png"}


def test_an_explainer_not_installed_gets_the_default_section_greyed_by_its_trust(tmp_path):
    figs = _figures(tmp_path, "h3probe_map.png")
    trust = {"explanations": {"h3probe": {"trust": "untrusted", "attributes": {
        "size": {"trust": "untrusted", "reasons": ["attribute_probe: 0.4 outside the pass",
                                                   "note: fine"]},
        "porosity": {"trust": "trusted", "reasons": []}}}}}
    metrics = _metrics(explain={"h3probe": {"score": 0.123456, "nested": {"x": 1}}},
                       trust=trust)
    sections = explainer_sections(tmp_path, metrics, figs, COMPONENTS)
    assert [(s.title, names) for s, names in sections] == [("h3probe", ["h3probe"])]
    assert sections[0][0].tables == [[("score", 0.123456)]]
    parts, used = evidence(tmp_path, metrics, figs)
    html = "".join(parts)
    assert "Untrusted: h3probe fails its trust gates for size: independent attribute probe: 0.4 " \
           "outside the pass</p>" in html and "note: fine" not in html
    assert "<td>0.123</td>" in html and Path(tmp_path / "figures" / "h3probe_map.png") in used


def test_sections_without_numbers_or_figures_are_left_out(tmp_path):
    metrics = {"explain": {"h3empty": {"nested": {"x": 1}}}}
    assert explainer_sections(tmp_path, metrics, [], COMPONENTS) == []
    parts, used = evidence(tmp_path, metrics, [])
    assert parts == [] and used == set()
