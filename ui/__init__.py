"""The Streamlit side of the explorer; nothing in cnsdiff_core imports it. Pages stay thin: widgets,
one core or ui call, render.

  pages.py    the one list of pages (navigation, links)     routing.py  the pages/-folder workaround
  state.py    session state, the URL, read-only mode, run pickers
  cache.py    the run store, cached by one run key           data.py     datasets, uploads, downloads
  forms.py    the Train form from the settings' metadata     tasks.py    the background-task panel, jobs
  context.py  a run opened on an explore page                maps.py     2-D maps of a run's items
  theme.py    palettes, sampler colours and markers          tune.py     the Tune page's storages
  figures/    Plotly figures by concern (maps, curves, workflow)

Environment:
  CNSDIFF_RUNS            run store folder (default runs/)
  CNSDIFF_READ_ONLY=1     workshop mode (also `streamlit run app.py -- --read-only`)
  CNSDIFF_IMPORT_ROOTS    folders (os.pathsep-separated) a local import may read from
                          (default: the repo's sample_data and ../shared/datasets)
  CNSDIFF_DEMO_SET        overrides of the one-click demo, `key=value,...` as in `--set`
                          (e.g. `epochs=5` for a slow laptop; the app tests use it)
  CNSDIFF_MAX_JOBS        training jobs that may run at once in this process (default 1;
                          later ones wait as 'queued' so a laptop is not oversubscribed)
"""
