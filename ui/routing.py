"""The one workaround of Streamlit's routing, isolated here with its reason.

With a `pages/` folder next to app.py (the project's required layout), Streamlit serves the first
request of a freshly started server (and a deep link opened then) with its old folder routing,
which runs the linked page file on its own: no sidebar, no URL state, no navigation. st.navigation
in app.py switches that routing off for the process (`PagesManager.uses_pages_directory = False`),
but only once app.py has run. So every page starts with `require_frame()`: while the old routing
is in charge it switches it off, runs app.py's frame in this same run (its st.navigation then runs
this page inside it; a button pressed in this run stays pressed) and stops the outer run. Once
app.py's navigation is in charge it does nothing. It needs Streamlit's private PagesManager class;
without it (a Streamlit without the old routing) it does nothing either.
"""
from __future__ import annotations

import runpy

import streamlit as st

from .pages import REPO


def require_frame() -> None:
    """First call of every page (see the module doc)."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the old routing
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(REPO / "app.py"), run_name="__main__")
        st.stop()
