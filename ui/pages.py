"""The one list of pages: their files, titles, icons, URL paths and sections. app.py builds the
navigation from it, pages link to each other through it.

Every URL path is the one Streamlit's old `pages/`-folder routing derives from the file name
("3_train.py" -> "train"): on a freshly started server that routing handles the first request, so a
deep link must name a page it knows (ui/routing.py then hands over to app.py's frame)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

REPO = Path(__file__).resolve().parents[1]
WORKFLOW, EXPLORE = "Workflow", "Explore the diffusion"


@dataclass(frozen=True)
class PageSpec:
    key: str
    file: str  # relative to the repository
    title: str
    icon: str
    section: str = WORKFLOW
    trains: bool = False  # starts training: left out in read-only (workshop) mode
    default: bool = False

    @property
    def path(self) -> Path:
        return REPO / self.file

    @property
    def url_path(self) -> str:
        return Path(self.file).stem.split("_", 1)[1]


PAGES = (
    PageSpec("home", "pages/1_home.py", "Home", ":material/home:", default=True),
    PageSpec("data_and_shift", "pages/2_data_and_shift.py", "Data & shift", ":material/dataset:"),
    PageSpec("train", "pages/3_train.py", "Train", ":material/model_training:", trains=True),
    PageSpec("compare_runs", "pages/4_compare_runs.py", "Compare runs", ":material/leaderboard:"),
    # Tune stays in read-only mode: it then only browses the stored studies
    PageSpec("tune", "pages/9_tune.py", "Tune", ":material/manage_search:"),
    PageSpec("denoising", "pages/5_denoising.py", "Denoising", ":material/blur_on:", EXPLORE),
    PageSpec("negatives_map", "pages/6_negatives_map.py", "Negatives map", ":material/scatter_plot:", EXPLORE),
    PageSpec("fhn_hardness", "pages/7_fhn_hardness.py", "FHN & hardness", ":material/bar_chart:", EXPLORE),
    PageSpec("schedule_lab", "pages/8_schedule_lab.py", "Noise schedule lab", ":material/tune:", EXPLORE),
)
BY_KEY = {p.key: p for p in PAGES}


def navigation(read_only: bool) -> dict[str, list]:
    """st.navigation's sections: every page whose file exists (Train not in read-only mode)."""
    out: dict[str, list] = {}
    for p in PAGES:
        if p.path.is_file() and not (read_only and p.trains):
            out.setdefault(p.section, []).append(st.Page(p.path, title=p.title, icon=p.icon, url_path=p.url_path,
                                                         default=p.default))
    return out


def exists(key: str) -> bool:
    return BY_KEY[key].path.is_file()


def link(key: str, label: str | None = None, container=st, **kw) -> None:
    """A link to a page (nothing when its file does not exist)."""
    p = BY_KEY[key]
    if p.path.is_file():
        container.page_link(p.path, label=label or p.title, icon=kw.pop("icon", p.icon), **kw)


def switch(key: str) -> None:
    st.switch_page(BY_KEY[key].path)
