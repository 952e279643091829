"""Readers of embedding files (``.npy``, ``.parquet``, ``.csv``/``.tsv``, ``.pt``,
``.safetensors``) in row chunks."""

from .embeddings import (
    DEFAULT_CHUNK_BYTES,
    SUFFIXES,
    EmbeddingFileError,
    EmbeddingFileNotFoundError,
    EmbeddingSource,
    embedding_shape,
    iter_embedding_chunks,
    iter_paired_chunks,
    open_embeddings,
    resolve_chunk_rows,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "SUFFIXES",
    "EmbeddingFileError",
    "EmbeddingFileNotFoundError",
    "EmbeddingSource",
    "embedding_shape",
    "iter_embedding_chunks",
    "iter_paired_chunks",
    "open_embeddings",
    "resolve_chunk_rows",
]
