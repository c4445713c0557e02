"""RGB → infrared-style translators (see fusionrs.build.stages.Translator)."""
