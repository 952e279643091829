"""Encoders and heads (imports torch and densefeat.data only; never losses or training).

The pretrained text encoder imports ``transformers`` only when it is built (the ``text``
extra), so importing this package stays light.
"""

from .ehr import EHREncoder, EHREncoderConfig, event_times
from .heads import LinearClassifier, ProjectionHead
from .multimodal import MultimodalConfig, MultimodalEncoder
from .text import (
    PretrainedTextEncoder,
    SmallTextEncoder,
    TextEncoderConfig,
    TextModelNotFoundError,
    build_text_encoder,
)

__all__ = [
    "EHREncoder",
    "EHREncoderConfig",
    "LinearClassifier",
    "MultimodalConfig",
    "MultimodalEncoder",
    "PretrainedTextEncoder",
    "ProjectionHead",
    "SmallTextEncoder",
    "TextEncoderConfig",
    "TextModelNotFoundError",
    "build_text_encoder",
    "event_times",
]
