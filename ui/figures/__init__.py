"""Plotly figures by concern: maps (`maps`), curves (`curves`), the workflow pages (`workflow`)."""
from .curves import fhn_figure, hardness_figure, refit_figure, schedule_figure
from .maps import (chain_lines_figure, item_cloud_specs, map_figure, nn_distance_boxes, selected_rows,
                   trajectory_figure, trajectory_spec)
from .workflow import benchmark_bars, compare_bars, long_tail_figure, loss_figure, method_figure, valid_figure

__all__ = ["fhn_figure", "hardness_figure", "refit_figure", "schedule_figure", "chain_lines_figure", "item_cloud_specs", "map_figure", "nn_distance_boxes", "selected_rows", "trajectory_figure", "trajectory_spec", "benchmark_bars", "compare_bars",
           "long_tail_figure", "loss_figure", "method_figure", "valid_figure"]
