"""What viewers get: the multipart/x-mixed-replace wire format and the stream generator
(mjpeg.py), and the smaller sizes made once per frame for all their viewers (variants.py).
"""

from .variants import Variants

__all__ = ["Variants"]
