"""Data & shift: statistics, the popularity long tail per split, the size of the shift, a
synthetic-world generator, and import of the user's own files with a verdict per file."""
from pathlib import Path

import streamlit as st

from cnsdiff_core.data import DataError
from cnsdiff_core.data.imports import allowed_import_path, import_roots
from cnsdiff_core.data.loaders import INTERACTION_SUFFIXES, formats_text
from ui import data, figures, routing, state

routing.require_frame()

name, shift = state.current_dataset(), state.current_shift()
st.title("Data & shift")
st.caption(f"Dataset **{data.dataset_label(name)}**, shift **{shift}** (change them in the sidebar).")

try:
    ds = data.load_dataset_cached(name, shift)
except DataError as exc:
    ds = None
    st.error(str(exc))

if ds is not None:
    stats = ds.stats()
    cols = st.columns(7)
    for col, (label, value) in zip(cols, [("Users", f"{stats['users']:,}"), ("Items", f"{stats['items']:,}"),
                                          ("Train", f"{stats['train']:,}"), ("Valid", f"{stats['valid']:,}"),
                                          ("IID test", f"{stats['test_iid']:,}"), ("OOD test", f"{stats['test_ood']:,}"),
                                          ("Density", f"{stats['density']:.2%}")]):
        col.metric(label, value)
    st.caption(("Has timestamps. " if stats["has_timestamps"] else "No timestamps. ")
               + ("Synthetic world with ground-truth preferences (true FHN rates available)."
                  if stats["has_ground_truth"] else "No ground truth (FHN rates are observed only)."))

    left, right = st.columns([3, 2])
    with left:
        fig = figures.long_tail_figure(data.popularity_frame(name, shift))
        st.plotly_chart(fig, key="data_longtail", config={"displaylogo": False})
        st.caption("A flatter OOD curve than train means the test favours less popular items: "
                   "the popularity a model learned will not pay off there.")
    with right:
        rep = data.shift_report_cached(name, shift)

        def fmt(v, pct=False):
            return "n/a" if v is None else (f"{v:.1%}" if pct else f"{v:.3f}")

        st.markdown("##### Size of the shift")
        m1, m2 = st.columns(2)
        m1.metric("KL(IID test ‖ train)", fmt(rep.get("kl_test_iid")), help="nats, item distributions")
        m2.metric("KL(OOD test ‖ train)", fmt(rep.get("kl_test_ood")), help="nats, item distributions")
        m1.metric("Long-tail share, IID", fmt(rep.get("longtail_share_test_iid"), True),
                  help="share of held-out interactions on the 80% least popular items")
        m2.metric("Long-tail share, OOD", fmt(rep.get("longtail_share_test_ood"), True))
        m1.metric("Popularity ratio OOD / IID", fmt(rep.get("pop_ratio_ood_vs_iid")),
                  help="mean training popularity of OOD-test items over that of IID-test items")
        m2.metric("Gini of train popularity", fmt(rep.get("gini_train")))
        st.metric("OOD users also in the IID test", fmt(rep.get("user_overlap_ood"), True))
        with st.expander("Full shift report"):
            st.json(rep, expanded=False)

    st.markdown("##### Notes and warnings")
    if ds.notes:
        for note in ds.notes:
            st.markdown(f"- {note}")
    else:
        st.caption("No warnings for this dataset.")

st.divider()
# --- synthetic world ---------------------------------------------------------------------------------
with st.expander("Generate a synthetic world (ground truth known)", expanded=name.startswith("synthetic")):
    st.caption("A world where users truly like items by latent factors, while exposure is biased "
               "by popularity: confounding 0 = uniform exposure, 1 = exposure entirely by popularity.")
    c1, c2, c3, c4 = st.columns(4)
    n_users = c1.slider("Users", 100, 5000, 600, step=100, key="gen_users")
    n_items = c2.slider("Items", 400, 5000, 800, step=100, key="gen_items",
                        help="At least 400: each user needs enough relevant items for a 45-item log.")
    confounding = c3.slider("Confounding strength", 0.0, 1.0, 0.7, step=0.05, key="gen_confounding")
    seed = c4.number_input("Seed", 0, 10**6, 0, step=1, key="gen_seed")
    if state.read_only():
        st.info("Generating worlds is switched off in read-only workshop mode.")
    if st.button("Generate", key="gen_button", type="primary", disabled=state.read_only()):
        world = f"synthetic:n_users={n_users},n_items={n_items},confounding={confounding:g},seed={int(seed)}"
        try:
            with st.spinner("Generating the world…"):
                data.load_dataset_cached(world, "exposure")
        except DataError as exc:
            st.error(str(exc))
        else:
            state.select(dataset=world, shift="exposure")
            st.rerun()

# --- import ----------------------------------------------------------------------------------------------
with st.expander("Import your own data", expanded=False):
    locked = state.read_only()
    if locked:
        st.info("Import is switched off in read-only workshop mode.")
    st.caption(f"One interaction log ({formats_text()}) is split by the shift you pick; a folder of pre-split files "
               "(`train.txt`, `valid.txt`, `test_iid.txt`, `test_ood.txt`) keeps its own split.")

    def use(dataset_name: str, key: str) -> None:
        if st.button("Use this dataset", key=key, disabled=locked):
            try:
                with st.spinner("Loading…"):
                    loaded = data.load_dataset_cached(dataset_name, None)
            except DataError as exc:
                st.error(str(exc))
            else:
                state.select(dataset=dataset_name, shift=loaded.shift)
                st.rerun()

    up_tab, path_tab = st.tabs(["Upload files", "Local folder or file"])
    with up_tab:
        files = st.file_uploader("Interaction files", type=[s.lstrip(".") for s in INTERACTION_SUFFIXES],
                                 accept_multiple_files=True, key="import_upload", disabled=locked)
        if files and not locked:
            paths = data.save_uploads(files)
            verdicts = data.validate_paths(paths)
            st.dataframe(data.verdict_frame(verdicts), hide_index=True, key="import_upload_verdicts")
            choices = [str(p) for p, v in zip(paths, verdicts) if v["ok"]]
            if len(paths) > 1:
                choices.append(str(data.session_upload_dir()))
            if choices:
                pick = st.selectbox("Dataset to use", choices, key="import_upload_choice",
                                    format_func=lambda p: "all uploaded files as one pre-split folder"
                                    if Path(p).is_dir() else Path(p).name)
                use(pick, "import_upload_use")
            else:
                st.warning("None of the files can be used; see the messages above.")
    with path_tab:
        roots = ", ".join(str(r) for r in import_roots())
        typed = st.text_input("Path", key="import_path", disabled=locked, placeholder=str(import_roots()[0]),
                              help=f"Only paths under {roots} (set CNSDIFF_IMPORT_ROOTS to allow others).")
        st.caption(f"Allowed folders: {roots}")
        if typed and not locked:
            try:
                path = allowed_import_path(typed)
            except DataError as exc:
                st.error(str(exc))
            else:
                files = [path] if path.is_file() else sorted(
                    p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in INTERACTION_SUFFIXES)
                if not files:
                    st.warning(f"{path} holds no interaction files ({', '.join(INTERACTION_SUFFIXES)}).")
                else:
                    st.dataframe(data.verdict_frame(data.validate_paths(files)), hide_index=True,
                                 key="import_path_verdicts")
                    use(str(path), "import_path_use")
