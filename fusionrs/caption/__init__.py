"""IR-aware captioners (see fusionrs.stages.Captioner) and the IR-aware caption filter."""
