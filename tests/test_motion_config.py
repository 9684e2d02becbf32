"""Motion settings: what users write is read, every mistake is one line naming the file,
the camera and the key (or the variable), and a mask image is checked at start."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_config import run_to_exit

from server import config


def camera_of(toml: str, tmp_path, env: dict | None = None) -> config.CameraSettings:
    path = tmp_path / "cameras.toml"
    path.write_text(toml)
    return config.load({"CAMERAS_FILE": str(path), **(env or {})}).cameras[0]


def test_motion_is_off_by_default_with_the_issue_defaults():
    camera = config.load({}).cameras[0]
    assert camera.motion is False
    assert (camera.motion_threshold, camera.motion_noise, camera.motion_frames,
            camera.motion_gap, camera.motion_fps, camera.motion_lightswitch,
            camera.motion_mask, camera.motion_webhook) == (1.0, None, 2, 10.0, 5.0, 60.0,
                                                           None, None)


def test_environment_sets_motion_for_the_one_camera():
    camera = config.load({
        "MOTION": "yes", "MOTION_THRESHOLD": "2.5", "MOTION_NOISE": "20", "MOTION_FRAMES": "3",
        "MOTION_GAP": "4", "MOTION_FPS": "2", "MOTION_LIGHTSWITCH": "50",
        "MOTION_MASK": "0,0,100,10  80.5,50,19.5,50",
        "MOTION_WEBHOOK": "http://user:pw@ha.local:8123/api/webhook/door",
    }).cameras[0]
    assert camera.motion is True and camera.motion_threshold == 2.5
    assert camera.motion_noise == 20 and camera.motion_frames == 3
    assert camera.motion_gap == 4 and camera.motion_fps == 2 and camera.motion_lightswitch == 50
    assert camera.motion_mask == ((0, 0, 100, 10), (80.5, 50, 19.5, 50))
    assert camera.motion_webhook == "http://user:pw@ha.local:8123/api/webhook/door"
    assert config.load({"MOTION_NOISE": "auto"}).cameras[0].motion_noise is None


def test_cameras_file_takes_motion_keys_and_a_list_of_rectangles(tmp_path):
    camera = camera_of('[cameras.door]\nmotion = true\nmotion_noise = "auto"\n'
                       'motion_mask = ["0,0,50,20", "50,80,50,20"]\n', tmp_path)
    assert camera.motion and camera.motion_noise is None
    assert camera.motion_mask == ((0, 0, 50, 20), (50, 80, 50, 20))
    assert not camera.options  # motion keys are settings, not driver options


@pytest.mark.parametrize("key,value,says", [
    ("motion", '"maybe"', "1/0, true/false"),
    ("motion_threshold", "0", "> 0"),
    ("motion_threshold", "101", "<= 100"),
    ("motion_noise", "0", "auto, or a whole number from 1 to 255"),
    ("motion_noise", '"loud"', "auto, or a whole number from 1 to 255"),
    ("motion_frames", "0", ">= 1"),
    ("motion_gap", "-1", ">= 0"),
    ("motion_fps", "0", "> 0"),
    ("motion_fps", "100", "<= 30"),
    ("motion_lightswitch", "0.5", "more than motion_threshold"),
    ("motion_mask", '"0,0,120,10"', "not a rectangle inside the picture"),
    ("motion_mask", '"0,0,0,10"', "not a rectangle inside the picture"),
    ("motion_mask", '"0,0,10"', "not a rectangle inside the picture"),
    ("motion_mask", '"missing.png"', "no such file"),
    ("motion_mask", "3", "rectangles x,y,w,h"),
    ("motion_webhook", '"ftp://host/x"', "an http:// or https:// URL"),
    ("motion_webhook", '"http://:99999/x"', "an http:// or https:// URL"),
])
def test_bad_motion_value_names_file_camera_and_key(tmp_path, key, value, says):
    with pytest.raises(config.ConfigError) as caught:
        camera_of(f"[cameras.door]\n{key} = {value}\n", tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'cameras.toml'}: [cameras.door] {key}"), message
    assert says in message and "\n" not in message


def test_bad_webhook_never_shows_its_password():
    with pytest.raises(config.ConfigError) as caught:
        config.load({"MOTION_WEBHOOK": "ftp://admin:hunter2secret@ha.local/x"})
    assert "MOTION_WEBHOOK" in str(caught.value) and "hunter2secret" not in str(caught.value)


def test_mask_image_is_read_at_start(tmp_path):
    mask = np.full((48, 64), 255, np.uint8)
    mask[:, :32] = 0  # the left half is ignored
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    cv2.imwrite(str(tmp_path / "black.pgm"), np.zeros((8, 8), np.uint8))
    (tmp_path / "text.png").write_text("not an image")
    good = config.load({"MOTION_MASK": str(tmp_path / "mask.png")}).cameras[0]
    assert good.motion_mask == str(tmp_path / "mask.png")
    for name, says in (("black.pgm", "every pixel of the image is black"),
                       ("text.png", "not a readable image"), ("nothing.png", "no such file")):
        with pytest.raises(config.ConfigError) as caught:
            config.load({"MOTION_MASK": str(tmp_path / name)})
        assert str(caught.value).startswith("MOTION_MASK=") and says in str(caught.value)


def test_bad_motion_setting_stops_the_server_with_one_line(tmp_path):
    (tmp_path / "cameras.toml").write_text('[cameras.door]\nmotion = true\n'
                                           'motion_mask = "door-mask.png"\n')
    code, output = run_to_exit("dev", {"CAMERAS_FILE": str(tmp_path / "cameras.toml")},
                               tmp_path)
    assert code != 0 and "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "[cameras.door] motion_mask" in lines[0] and "no such file" in lines[0]
