"""Offscreen rendering of a tiny MJCF and video writing."""

import numpy as np
import pytest

import dexfly  # noqa: F401
import mujoco

from dexfly.render import render_batch, render_frames, tile_frames, write_video

XML = """
<mujoco>
  <worldbody>
    <light pos="0 0 2" dir="0 0 -1" diffuse="0.8 0.8 0.8"/>
    <camera name="front" pos="0.8 -0.8 0.6" xyaxes="1 1 0 -0.3 0.3 0.9"/>
    <geom name="floor" type="plane" size="1 1 0.1" rgba="0.3 0.35 0.4 1"/>
    <body name="box" pos="0 0 0.1">
      <freejoint/>
      <geom name="box_geom" type="box" size="0.1 0.1 0.1" rgba="0.9 0.3 0.2 1"/>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.fixture(scope="module")
def model():
    return mujoco.MjModel.from_xml_string(XML)


def _qpos(model, T):
    q = np.tile(model.qpos0, (T, 1))
    q[:, 0] = np.linspace(-0.2, 0.2, T)  # slide the box along x
    return q


def test_render_frames_and_video(model, tmp_path):
    frames = render_frames(model, _qpos(model, 3), camera="front", width=96, height=64)
    assert frames.shape == (3, 64, 96, 3) and frames.dtype == np.uint8
    assert frames.std() > 5, "image is uniform"
    assert not np.array_equal(frames[0], frames[-1]), "box moved, frames should differ"
    for ext in (".mp4", ".gif"):
        p = write_video(tmp_path / f"clip{ext}", frames, fps=10)
        assert p.exists() and p.stat().st_size > 0
    assert sorted(x.name for x in tmp_path.iterdir()) == ["clip.gif", "clip.mp4"]  # no temp files left


def test_overrides_and_batch(model):
    q = _qpos(model, 2)
    gid = model.geom("box_geom").id
    rgba = model.geom_rgba.copy()
    rgba[gid] = [0.1, 0.9, 0.1, 1]
    red = render_frames(model, q, width=64, height=48)
    green = render_frames(model, q, width=64, height=48, model_overrides={"geom_rgba": rgba})
    assert not np.array_equal(red, green)
    assert model.geom_rgba[gid, 1] == pytest.approx(0.3)  # input model untouched
    with pytest.raises(ValueError, match="not_a_field"):
        render_frames(model, q, model_overrides={"not_a_field": np.zeros(3)})

    B = 3
    qb = np.stack([q] * B, axis=1)
    sizes = np.stack([model.geom_size] * B)
    sizes[1, gid] = [0.05, 0.05, 0.05]
    grid = render_batch(model, qb, [0, 1, 2], overrides_per_env={"geom_size": sizes}, width=40, height=30, pad=2)
    assert grid.shape == (2, 2 * 32 - 2, 2 * 42 - 2, 3)
    tiles = grid[0, :30, :40], grid[0, :30, 42:82], grid[0, 32:62, :40]
    assert np.array_equal(tiles[0], tiles[2]) and not np.array_equal(tiles[0], tiles[1])


def test_tile_frames_shape():
    fr = np.zeros((2, 5, 4, 6, 3), np.uint8)
    assert tile_frames(fr, ncols=2, pad=1).shape == (2, 3 * 5 - 1, 2 * 7 - 1, 3)
