"""explorer: watch deep-learning phenomena happen. Router (st.navigation) and home page."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from explorer.core.device import configure_threads
from views.registry import LABS

ROOT = Path(__file__).resolve().parent
FAVICON = ROOT / "static" / "favicon.png"  # a local file: a Material icon favicon is fetched from a font CDN


def home() -> None:
    st.title("Deep-learning phenomena, live")
    st.write("Each page trains real networks on your machine's best device and shows what happens. "
             "Pick one:")
    cols = st.columns(2)
    for i, info in enumerate(LABS):
        with cols[i % 2].container(border=True):
            st.page_link(info.path, label=f"**{info.title}**", icon=info.icon)
            st.caption(info.see)


configure_threads()
st.set_page_config(page_title="explorer", page_icon=FAVICON, layout="wide")
nav = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True)]
                    + [st.Page(p.path, title=p.title, icon=p.icon, url_path=p.url) for p in LABS])
nav.run()
