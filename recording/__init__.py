"""Recording while streaming: which clip is wanted (plan.py, pure), the tap and writer
threads (tap.py, writer.py), the control and status surface (recorder.py), the files on
disk (folder.py), the PyAV clip writer (clip_file.py) and the HTTP routes (routes.py).
"""

from .clip_file import RecordingError, load_av
from .recorder import Recorder, Recorders

__all__ = ["Recorder", "Recorders", "RecordingError", "load_av"]
