"""Fake outputs: FileOutput hands each frame to a file-like object, as picamera2 does."""


class FileOutput:
    def __init__(self, file) -> None:
        self.file = file
        file.write  # noqa: B018 - picamera2 needs a writable object

    def write(self, frame: bytes) -> None:
        self.file.write(frame)
        self.file.flush()
