"""Source readers. Each format plans work units in the driver (ids and captions only, no image
bytes) and reads one unit's records, image bytes included, inside a Ray task.

All formats yield the same `SourceRecord`; see docs/schema.md.
"""

from fusionrs.build.readers.base import READ_ERROR_MISSING, SourceRecord, WorkUnit, make_sample_id
from fusionrs.build.readers.registry import plan_units, read_unit

__all__ = ["SourceRecord", "WorkUnit", "make_sample_id", "plan_units", "read_unit", "READ_ERROR_MISSING"]
