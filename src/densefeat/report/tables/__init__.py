"""The report's tables, one module per section; each builder takes the validated results."""

from .alignment import alignment_table
from .comparison import comparison_table
from .geometry import geometry_table
from .probes import kshot_tables, probe_tables, tasks_table
from .robustness import robustness_tables
from .temporal import temporal_tables
from .tuning import tuning_table

__all__ = [
    "alignment_table",
    "comparison_table",
    "geometry_table",
    "kshot_tables",
    "probe_tables",
    "robustness_tables",
    "tasks_table",
    "temporal_tables",
    "tuning_table",
]
