"""The server's settings for a shared lecture server: small uploads, XSRF on, no tracebacks or toolbar for
visitors; dependency floors above releases with known vulnerabilities."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_streamlit_config_is_set_for_a_shared_server() -> None:
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] <= 10  # MB; Streamlit's default, 200 MB, lets one upload fill memory
    assert cfg["server"]["enableXsrfProtection"] is True
    assert cfg["client"]["showErrorDetails"] == "none"  # tracebacks with server paths stay in the log
    assert cfg["client"]["toolbarMode"] == "viewer"


def test_dependency_floors() -> None:
    floors = {m["name"].lower(): tuple(int(x) for x in m["version"].split("."))
              for m in re.finditer(r"^(?P<name>[A-Za-z0-9_-]+)>=(?P<version>[0-9.]+)", (ROOT / "requirements.txt")
                                   .read_text(), re.M)}
    assert floors["streamlit"] >= (1, 54) and floors["torch"] >= (2, 10) and floors["pillow"] >= (12, 2)
    assert floors["torchvision"] >= (0, 25)
