"""The errors of reading file systems inside images: damage, no support, a failing disk."""

from __future__ import annotations

from strongroom.errors import SourceError


class ImageFileSystemError(SourceError):
    """A file system inside an image is damaged, unsupported, or asked for something it lacks."""


class UnsupportedFileSystem(ImageFileSystemError):
    """The image or partition holds no file system strongroom can read."""


class ImageReadError(SourceError):
    """The disk stream under a file system failed with an error that is not strongroom's own."""


class ChainError(ImageFileSystemError):
    """A FAT cluster chain is damaged; `guard` adds which file system and path."""
