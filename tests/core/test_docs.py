"""Docs stay true: the README shows the two commands (the config reference's tests are in
test_configdoc.py)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_shows_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
