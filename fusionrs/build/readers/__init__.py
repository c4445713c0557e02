"""Source readers. Each format plans work units in the driver (ids and captions only, no image
bytes) and reads one unit's records, image bytes included, inside a Ray task.

All formats yield the same `SourceRecord`; docs/security.md says what a record may read.
"""

from fusionrs.build.readers.base import SourceError, SourceRecord, WorkUnit, make_sample_id
from fusionrs.build.readers.registry import plan_units, read_unit

__all__ = ["SourceError", "SourceRecord", "WorkUnit", "make_sample_id", "plan_units", "read_unit"]
