"""explorer: watch deep-learning phenomena happen. Router (st.navigation) and home page."""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from explorer.core import settings
from explorer.core.device import configure_threads
from explorer.core.jobs import default_runner
from explorer.core.status import configure_logging, start_status_log
from views.registry import LABS, SECTIONS
from views.widgets import watch_sessions

log = logging.getLogger("explorer.app")

ROOT = Path(__file__).resolve().parent
FAVICON = ROOT / "static" / "favicon.png"  # a local file: a Material icon favicon is fetched from a font CDN


def home() -> None:
    st.title("Deep-learning phenomena, live")
    st.write("Each page trains real networks on your machine's best device and shows what happens. "
             "Pick one:")
    for section, blurb in SECTIONS.items():
        labs = [p for p in LABS if p.section == section]
        if not labs:
            continue
        st.subheader(section)
        st.write(blurb)
        cols = st.columns(2)
        for i, info in enumerate(labs):
            with cols[i % 2].container(border=True):
                st.page_link(info.path, label=f"**{info.title}**", icon=info.icon)
                st.caption(info.see)


def _sessions() -> int | None:
    """Browser sessions connected to this server now (Streamlit's runtime), for the status log line."""
    try:
        from streamlit.runtime import Runtime

        return Runtime.instance()._session_mgr.num_active_sessions()  # no public API for the count
    except Exception:  # no runtime (AppTest, bare mode) or a Streamlit without this attribute
        return None


def signed_in() -> bool:
    """With `require_login` set (explorer.toml / EXPLORER_REQUIRE_LOGIN), a visitor signs in with the OIDC provider
    configured in .streamlit/secrets.toml ([auth]; see README) before any page runs; True when the page may run."""
    if not settings.current().require_login:
        return True
    if st.user.get("is_logged_in", False):
        with st.sidebar:
            st.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}")
            st.button("Sign out", on_click=st.logout, key="app_logout")
        return True
    st.title("Sign in")
    st.write("This server asks every visitor to sign in before training runs on it.")
    if st.button("Sign in", type="primary", key="app_login"):
        try:
            st.login()
        except Exception:  # StreamlitAuthError: [auth] missing or incomplete; the details are for the operator
            log.exception("sign-in is required (require_login) but st.login failed")
            st.error("Sign-in is switched on but not set up on this server. The operator must add an [auth] "
                     "section to .streamlit/secrets.toml (see the README, Serving a class).")
    return False


configure_threads()
configure_logging()  # job tracebacks and the status line go to the server's log
start_status_log(default_runner(), settings.current().status_log_s, _sessions)  # once per process; 0: off
watch_sessions()  # once per process: a closed tab's jobs are released within seconds
st.set_page_config(page_title="explorer", page_icon=FAVICON, layout="wide")
if not signed_in():
    st.stop()
pages = {"": [st.Page(home, title="Home", icon=":material/home:", default=True)]}
for section in SECTIONS:  # the sidebar groups the labs by section
    pages[section] = [st.Page(p.path, title=p.title, icon=p.icon, url_path=p.url) for p in LABS if p.section == section]
nav = st.navigation({name: group for name, group in pages.items() if group}, expanded=True)  # every lab listed
nav.run()
