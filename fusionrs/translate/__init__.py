"""RGB → infrared-style translators (see fusionrs.stages.Translator)."""
