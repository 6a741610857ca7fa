"""Labelled image sets in and out: class-per-folder images (``folders.py``), which class a folder holds
(``class_folders.py``), classes by index or label (``class_names.py``), synthesis files and folders read as
one dataset (``image_sets.py``), how compressed the files are (``jpeg_quality.py``), PNGs and contact
sheets out (``export.py``)."""

from .folders import (
    IMAGE_EXTENSIONS,
    ImageFolderIndex,
    LoaderPlan,
    default_workers,
    folder_loader,
    plan_loader,
    read_image,
    scan_image_folder,
    seed_files,
)

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderIndex", "LoaderPlan", "default_workers", "folder_loader", "plan_loader", "read_image", "scan_image_folder", "seed_files"]
