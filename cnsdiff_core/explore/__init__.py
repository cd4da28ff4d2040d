"""Computation behind the explorer's pages that *show* negatives: Denoising (`trajectories`),
Negatives map (`maps`), FHN & hardness (`fhn`) and the Noise-schedule lab (`lab`).

Everything here works on what a run stored (final embeddings, the selected denoiser, the probe
negatives, the diagnostics table) plus the run's `Dataset`; it never trains the recommender,
never imports Streamlit and never prints. Pages call one function per view and render the result;
the slow ones (a UMAP fit, a denoiser refit) run as background tasks (`cnsdiff_core.tasks`).

Conventions: users and items are dense indices; "original ids" are `Dataset.user_ids/item_ids`.
Errors a user can cause raise `ExploreError` (or `ConfigError` for schedule values) with one
sentence that says what to do.
"""
from ..diagnostics import PRE_MIX, TRAINED
from ..samplers import SYNTHESIZING
from .common import (ExploreError, build_denoiser, id_labels, is_synthesized, item_labels, run_denoiser, sampler_key,
                     series_order, user_items, user_summary, users_with_training)
from .fhn import (confounding_table, fhn_curves, fhn_table, hardness_samples, selected_epoch_rows, series_name,
                  world_confounding)
from .lab import (DenoiserRefit, RefitTask, lab_config, refit_denoiser, schedule_curves, start_refit,
                  step_report)
from .maps import ItemMaps, fit_item_map, item_frame, negatives_frame, positives_frame
from .trajectories import Trajectories, denoising_trajectories, update_formula

__all__ = ["ExploreError", "SYNTHESIZING", "PRE_MIX", "TRAINED", "build_denoiser", "run_denoiser", "sampler_key",
           "is_synthesized", "series_order", "id_labels", "item_labels", "user_items", "users_with_training",
           "user_summary", "Trajectories", "denoising_trajectories", "update_formula", "fit_item_map", "item_frame",
           "negatives_frame", "positives_frame", "ItemMaps", "series_name", "fhn_curves", "fhn_table",
           "hardness_samples", "world_confounding", "selected_epoch_rows", "confounding_table", "schedule_curves",
           "lab_config", "step_report", "DenoiserRefit", "refit_denoiser", "RefitTask", "start_refit"]
