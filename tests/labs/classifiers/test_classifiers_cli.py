"""`python -m explorer classify`: a tiny run on digits prints its metrics and the table; refused settings exit 2."""

from __future__ import annotations

from explorer.labs.classifiers import cli

TINY = ["--dataset", "digits", "--n-train", "200", "--n-val", "100", "--n-test", "100", "--width", "0.25",
        "--epochs", "1", "--patience", "0", "--device", "cpu"]


def test_cli_trains_prints_and_lists(capsys):
    assert cli.main(TINY) == 0
    out = capsys.readouterr().out
    assert out.startswith("python -m explorer classify --preset simple --dataset digits --n-train 200")
    assert "top-1 error" in out and "Simple CNN x0.25" in out and "per class (accuracy)" in out
    assert cli.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "Simple CNN x0.25" in listed and "top-1" in listed


def test_cli_refuses_bad_settings(capsys):
    assert cli.main(["--epochs", "0"]) == 2
    assert "setting refused" in capsys.readouterr().err
    assert cli.main(["--preset", "nope"]) == 2
    assert "preset must be one of" in capsys.readouterr().err
    assert cli.main(["--dataset", "mnist1d"]) == 2
    assert "not an image data set" in capsys.readouterr().err
    assert cli.main(["--n-val", "0", "--patience", "2"]) == 2
