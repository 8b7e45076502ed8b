"""Datasets (one registry: what each dataset is, and its loader) and the resumable batch stream."""
from sagan.data.datasets import DATASETS, DatasetSpec, ImageData, dataset_spec, load_data
from sagan.data.stream import BatchStream
from sagan.errors import DataError

__all__ = ["DATASETS", "DatasetSpec", "DataError", "ImageData", "dataset_spec", "load_data", "BatchStream"]
