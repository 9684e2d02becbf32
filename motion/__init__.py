"""Motion detection: which frames show motion (detector.py, pure), when an event starts
and ends (episode.py, pure), the mask at the detector's size (mask.py), the thread that
watches a camera and drives the recorder and the feed (watch.py) and the HTTP routes
(routes.py).
"""

from .detector import Analysis, Detector, Tuning, small_grey
from .episode import Episodes, Event, Step
from .watch import Watch, Watches

__all__ = ["Analysis", "Detector", "Episodes", "Event", "Step", "Tuning", "Watch", "Watches",
           "small_grey"]
