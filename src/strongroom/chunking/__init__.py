"""Chunkers: content-defined for file data, fixed and aligned for block data."""

from strongroom.chunking.base import Chunker
from strongroom.chunking.cdc import CdcChunker
from strongroom.chunking.fixed import FixedChunker

__all__ = ["CdcChunker", "Chunker", "FixedChunker"]
