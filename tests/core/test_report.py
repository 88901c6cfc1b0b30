"""The report: self-contained, escapes every user string, and loads cleanly in headless Chromium
(console free of errors, every image decoded, a screenshot saved)."""

import json
import os
import shutil
import subprocess

import pytest
from report_runs import EVIL, make_run

from mxplain.report import write_report


def test_report_escapes_and_embeds(tmp_path):
    path = write_report(make_run(tmp_path))
    html = path.read_text()
    assert EVIL not in html and "&lt;script&gt;" in html
    assert "<script" not in html.lower()
    assert html.count("data:image/png;base64,") == 2
    assert "src=\"http" not in html and "src='http" not in html  # self-contained


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHECK = """<!doctype html><html><body><iframe id="r" src="{src}" width="1200" height="900"></iframe>
<script>
document.getElementById("r").onload = function () {{
  const d = this.contentDocument;
  const imgs = Array.from(d.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const text = d.body.innerText.includes("<script>alert('x')<\\/script>");
  const scripts = d.querySelectorAll("script").length;
  document.body.setAttribute("data-result", JSON.stringify({{images: imgs.length, loaded: ok,
    evil_shown_as_text: text, scripts: scripts}}));
}};
</script></body></html>"""


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (.ci/run installs the "
                    "Debian package 'chromium'; it could not be installed here)")
def test_report_in_headless_chromium(tmp_path):
    report = write_report(make_run(tmp_path))
    check = tmp_path / "check.html"
    check.write_text(CHECK.format(src=report.as_uri()))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files",
             "--virtual-time-budget=5000"]
    env = {**os.environ, "HOME": str(tmp_path)}
    res = subprocess.run([_chromium(), *flags, "--enable-logging=stderr", "--v=0", "--dump-dom",
                          check.as_uri()], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    marker = 'data-result="'
    assert marker in res.stdout, res.stdout[-2000:]
    raw = res.stdout.split(marker, 1)[1].split('"', 1)[0].replace("&quot;", '"')
    result = json.loads(raw)
    assert result == {"images": 2, "loaded": 2, "evil_shown_as_text": True, "scripts": 0}
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    shot = tmp_path / "report.png"
    res = subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,1600",
                          report.as_uri()], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
