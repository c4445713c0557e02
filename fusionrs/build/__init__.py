"""The build floor: source readers, ingest, caption cleaning, dedup and split, translators,
captioners, the per-part workers and the Ray pipeline that wires them (pipeline.build)."""
