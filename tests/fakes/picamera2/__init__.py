"""A fake picamera2 for tests: the API camera_pi.py uses, no hardware.

Its encoder calls output.write() with numbered JPEGs from its own thread at the
configured FrameRate, as the real one does. Calls are appended as JSON lines to the
file FAKE_PICAMERA2_LOG; FAKE_PICAMERA2_FAIL=absent|busy makes Picamera2() fail as the
real one does with no camera (IndexError) or a busy one (RuntimeError).
"""

import json
import os


def record(event: str, **fields) -> None:
    path = os.environ.get("FAKE_PICAMERA2_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, **fields}) + "\n")


class Picamera2:
    def __init__(self) -> None:
        fail = os.environ.get("FAKE_PICAMERA2_FAIL")
        if fail == "absent":
            raise IndexError("list index out of range")
        if fail == "busy":
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.config = None
        self.encoder = None
        record("open")

    def create_video_configuration(self, main, transform=None, controls=None):
        return {"main": main, "transform": transform, "controls": controls or {}}

    def configure(self, config) -> None:
        self.config = config
        t = config["transform"]
        record("configure", size=list(config["main"]["size"]), hflip=bool(t and t.hflip),
               vflip=bool(t and t.vflip), fps=config["controls"].get("FrameRate"))

    def start_recording(self, encoder, output, quality=None) -> None:
        self.encoder = encoder
        record("start_recording", quality=getattr(quality, "name", None))
        encoder.start(output, self.config["controls"].get("FrameRate", 30.0))  # a FileOutput

    def stop_recording(self) -> None:
        if self.encoder is not None:
            self.encoder.stop()
        record("stop_recording")

    def close(self) -> None:
        record("close")
