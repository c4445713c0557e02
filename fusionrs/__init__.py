"""FusionRS: RGB–infrared–text remote-sensing datasets on Ray."""
__version__ = "0.1.0"
