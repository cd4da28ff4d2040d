"""Data layer: loading, splitting and generating interaction data (no Streamlit, no printing).

Everything returns a `Dataset` of dense (user, item) id arrays; user-caused problems raise
`DataError` with a one-sentence message.
"""
from .dataset import SHIFTS, DataError, Dataset, GroundTruth
from .folders import load_split_folder
from .ids import IdMap
from .loaders import FORMATS, detect_format, read_interactions
from .positives import to_positives
from .registry import data_root_path, list_datasets, load_dataset, parse_synthetic, validate_files
from .shift_report import shift_report
from .splits import InteractionLog, exposure_split, given_split, popularity_split, random_split, split, temporal_split
from .synthetic import World, WorldConfig, generate_world, world_dataset
from .world_files import load_world, save_world

__all__ = [
    "SHIFTS", "DataError", "Dataset", "GroundTruth",
    "IdMap", "FORMATS", "detect_format", "load_split_folder", "read_interactions", "to_positives",
    "data_root_path", "list_datasets", "load_dataset", "parse_synthetic", "validate_files",
    "InteractionLog", "exposure_split", "given_split", "popularity_split", "random_split",
    "shift_report", "split", "temporal_split",
    "World", "WorldConfig", "generate_world", "load_world", "save_world", "world_dataset",
]
