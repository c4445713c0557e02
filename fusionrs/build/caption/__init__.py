"""IR-aware captioners (see fusionrs.build.stages.Captioner) and the IR-aware caption filter."""
