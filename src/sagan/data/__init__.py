"""Datasets and the resumable batch stream."""
from sagan.data.datasets import DataError, ImageData, load_data
from sagan.data.stream import BatchStream

__all__ = ["DataError", "ImageData", "load_data", "BatchStream"]
