"""mxplain.errors: the exceptions the CLI turns into exit codes. Every ``UserError`` (and its
kinds, ``NotAvailableError`` and ``PluginError``) is one ``error: …`` line on stderr and exit 2;
``MxplainError`` itself is not a user's mistake and is not hidden."""

from __future__ import annotations

import pytest

import mxplain
import mxplain.pipeline
from mxplain.cli import main
from mxplain.errors import MxplainError, NotAvailableError, PluginError, UserError


def test_the_kinds_of_error():
    assert issubclass(UserError, MxplainError) and issubclass(MxplainError, Exception)
    assert issubclass(NotAvailableError, UserError) and issubclass(PluginError, UserError)
    assert not issubclass(PluginError, NotAvailableError)
    assert (mxplain.UserError, mxplain.NotAvailableError, mxplain.MxplainError) == \
        (UserError, NotAvailableError, MxplainError)


@pytest.mark.parametrize("kind", [UserError, NotAvailableError, PluginError])
def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys, kind):
    def refuse(*args, **kwargs):
        raise kind("the editor 'x' is not installed")

    monkeypatch.setattr(mxplain.pipeline, "run", refuse)
    assert main(["run", "any.toml", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: the editor 'x' is not installed\n"


def test_an_error_that_is_not_the_users_is_not_hidden(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise MxplainError("internal")

    monkeypatch.setattr(mxplain.pipeline, "run", broken)
    with pytest.raises(MxplainError, match="internal"):
        main(["run", "any.toml"])


def test_an_unknown_component_in_a_config_is_a_plugin_error_in_one_line(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[data]\nname = "synthetic"\n[predictor]\nname = "widersnet"\n')
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "unknown predictor 'widersnet'" in err and "did you mean 'wideresnet'" in err
    assert not (tmp_path / "run").exists()
