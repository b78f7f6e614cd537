"""Training: datasets, configuration generation, force-matching fits, metrics.

Example
-------
>>> from fesurf.training import TrainConfig, split_indices
>>> len(split_indices(10, seed=0)["train"])
8
"""
from .data import Dataset, read_frames, split_indices, write_labels
from .fit import TrainConfig, fit_element_energies, train
from .long_range_fit import LongRangeTrainConfig, train_long_range
from .metrics import calibration, error_metrics, evaluate, parity_plot, predict_dataset
from .metrics import calibrate, calibration_curves, calibration_plot, spread_and_errors

__all__ = ["Dataset", "read_frames", "write_labels", "split_indices", "TrainConfig", "train",
           "fit_element_energies", "error_metrics", "evaluate", "calibration", "parity_plot", "predict_dataset",
           "calibrate", "calibration_curves", "calibration_plot", "spread_and_errors",
           "LongRangeTrainConfig", "train_long_range"]
