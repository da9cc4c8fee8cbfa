"""The options every lab's command shares (--device, --ship / --shipped) and the device and cache they name."""

from __future__ import annotations

import argparse
import io
from types import SimpleNamespace

import torch

from explorer.core import command


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    command.add_device_option(ap)
    command.add_ship_option(ap)
    return ap


def test_the_options_parse_with_either_spelling_of_ship() -> None:
    ap = _parser()
    assert vars(ap.parse_args([])) == {"device": None, "ship": False}
    assert ap.parse_args(["--ship"]).ship and ap.parse_args(["--shipped"]).ship
    assert ap.parse_args(["--device", "cpu"]).device == "cpu"
    assert command.command_device(None) is None and command.command_device("cpu") == torch.device("cpu")


def test_command_run_runs_on_the_cache_and_device_the_options_name(monkeypatch, capsys) -> None:
    monkeypatch.setattr(command, "shipped_cache", lambda: "shipped")
    monkeypatch.setattr(command, "default_cache", lambda: "runtime")
    seen = []

    def run(cache, report, device):
        seen.append((cache, device))
        report.publish(progress=1.0, message="done")
        return SimpleNamespace(metrics={"notice": "Fashion-MNIST is not here: used digits"})

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    command.command_run(_parser().parse_args(["--ship", "--device", "cpu"]), run)
    command.command_run(_parser().parse_args([]), run)
    assert seen == [("shipped", torch.device("cpu")), ("runtime", None)]
    assert stream.getvalue().count("Fashion-MNIST is not here: used digits") == 2
