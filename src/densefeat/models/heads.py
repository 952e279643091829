"""Heads on top of an encoder: the projector of joint-embedding training and a linear classifier.

Geometry is reported for both the backbone output and the projector output (docs/design.md,
Baselines), so neither of them ends in a LayerNorm: a LayerNorm output lies in an affine
hyperplane, which gives every embedding matrix an exact null direction after centring.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LinearClassifier", "ProjectionHead"]

_NORMS = ("batch", "layer", "none")


class ProjectionHead(nn.Module):
    """MLP projector: ``(Linear -> Norm -> ReLU) x (n_layers - 1) -> Linear``.

    The default ``norm="batch"`` is the projector of SimCLR (Chen et al. 2020), VICReg (Bardes
    et al. 2022) and Barlow Twins (Zbontar et al. 2021), so the baselines match their reference
    implementations. BatchNorm couples the rows of a batch: under DDP wrap the model with
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` for the statistics to be the global batch's (a
    2-process step equals the single-process step only then), and a training batch needs at
    least 2 rows. ``norm="layer"`` is per-row (no cross-rank statistics, batch-size
    independent); ``"none"`` is a plain MLP. The last layer is a plain Linear (no norm, no
    activation): the output has no LayerNorm null direction and can take any scale.

    Args:
        d_in: input width (the encoder's embedding width).
        d_hidden: hidden width.
        d_out: output width.
        n_layers: number of Linear layers (>= 1; 1 is a single Linear).
        norm: ``"batch"``, ``"layer"`` or ``"none"``, after each hidden Linear.

    Raises:
        ValueError: a non-positive width or layer count, or an unknown norm (named).
    """

    def __init__(
        self, d_in: int, d_hidden: int, d_out: int, n_layers: int = 2, norm: str = "batch"
    ):
        super().__init__()
        for name, value in (
            ("d_in", d_in),
            ("d_hidden", d_hidden),
            ("d_out", d_out),
            ("n_layers", n_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProjectionHead.{name} must be an int >= 1, got {value!r}")
        if norm not in _NORMS:
            raise ValueError(f"ProjectionHead.norm must be one of {_NORMS}, got {norm!r}")
        layers: list[nn.Module] = []
        width = d_in
        for _ in range(n_layers - 1):
            # The Linear's bias is redundant before BatchNorm, which subtracts the mean.
            layers.append(nn.Linear(width, d_hidden, bias=norm != "batch"))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(d_hidden))
            elif norm == "layer":
                layers.append(nn.LayerNorm(d_hidden))
            layers.append(nn.ReLU(inplace=True))
            width = d_hidden
        layers.append(nn.Linear(width, d_out))
        self.net = nn.Sequential(*layers)
        self.d_out = d_out

    def forward(self, z: Tensor) -> Tensor:
        """(B, d_in) -> (B, d_out)."""
        return self.net(z)


class LinearClassifier(nn.Module):
    """One Linear layer from embeddings to logits, for the ``supervised`` method.

    Logits, not probabilities: use ``BCEWithLogitsLoss`` for binary or multi-label tasks
    (``n_outputs`` = number of tasks) and ``CrossEntropyLoss`` for one multi-class task.

    Args:
        d_in: embedding width.
        n_outputs: number of logits.
        dropout: dropout on the embedding before the Linear (training only).

    Raises:
        ValueError: a non-positive width, or dropout outside [0, 1).
    """

    def __init__(self, d_in: int, n_outputs: int = 1, dropout: float = 0.0):
        super().__init__()
        for name, value in (("d_in", d_in), ("n_outputs", n_outputs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LinearClassifier.{name} must be an int >= 1, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LinearClassifier.dropout must be in [0, 1), got {dropout!r}")
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(d_in, n_outputs)

    def forward(self, z: Tensor) -> Tensor:
        """(B, d_in) -> (B, n_outputs) logits."""
        return self.linear(self.dropout(z))
