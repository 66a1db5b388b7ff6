"""SwanSphere: streaming First-Order Ambisonics generation from 360° video and text."""

__version__ = "0.1.0"
