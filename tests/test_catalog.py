"""Object / environment / pose catalogs: contents, geometry sanity, compilation and error messages."""

import json
import math
import shutil

import numpy as np
import pytest

import dexfly  # noqa: F401
import mujoco

from dexfly import paths
from dexfly.catalog import TASK_ROLES, TASKS, CatalogError, load_catalog
from envs import scene as scene_lib
from envs.scene import object_body_xml


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def _cats(objs):
    out = {}
    for o in objs:
        out[o.category] = out.get(o.category, 0) + 1
    return out


def test_counts_and_categories(cat):
    grasp = cat.filter_objects(task="grasp")
    assert len(grasp) >= 40 and len(_cats(grasp)) >= 6
    assert {"box", "can", "bottle", "ball", "mug", "irregular"} <= set(_cats(grasp))
    assert len(cat.filter_objects(task="pour", role="source")) >= 6
    assert len(cat.filter_objects(task="pour", role="target_container")) >= 6
    lift = cat.filter_objects(task="lift")
    assert len(lift) >= 20 and len(_cats(lift)) >= 4
    hand = cat.filter_objects(task="handover")
    assert len(hand) >= 20 and len(_cats(hand)) >= 5
    assert len(cat.environments) >= 12
    for task in TASKS:
        print(task, {r: _cats(o) for r, o in cat.task_objects(task).items()})


def test_defaults(cat):
    for task in TASKS:
        first = [o for o in cat.objects if task in o.tasks]
        for role, obj in cat.default_objects(task).items():
            assert obj == [o for o in first if o.role == cat.default_object(task, role).role][0]
    assert cat.default_object("grasp").id == next(o.id for o in cat.objects if "grasp" in o.tasks)
    assert cat.default_object("handover").id == "box_tall_bar"
    assert cat.default_object("pour", "source").role == "source_container"
    assert cat.default_object("pour", "target").role == "target_container"
    assert cat.default_env is cat.environments[0] and cat.default_env.table_height == 0.0
    assert cat.default_pose("grasp")["object"] == (0.5, 0.0, 0.0)
    assert cat.default_pose("pour")["source"][:2] == (0.5, -0.12)
    assert cat.default_pose("pour").id == "p00"
    assert load_catalog() is load_catalog()  # cached


def _min_horizontal(o):
    return 2 * min(o.half_extents[:2])


def _max_horizontal(o):
    return 2 * max(o.half_extents[:2])


def test_object_sizes_and_masses(cat):
    for o in cat.filter_objects(task="grasp"):
        assert 0.03 <= _min_horizontal(o) <= 0.08, o.id
        assert 0.03 <= o.mass <= 0.4, o.id
    for o in cat.filter_objects(task="handover"):
        assert 0.04 <= _min_horizontal(o) <= 0.08, o.id
    for o in cat.filter_objects(task="lift"):
        assert 0.25 <= _max_horizontal(o) <= 0.40, o.id
        assert 0.2 <= o.mass <= 1.5, o.id
    r = cat.particles.radius
    assert cat.particles.count >= 5
    for o in cat.filter_objects(task="pour", role="source"):
        assert _max_horizontal(o) <= 0.07 and 0.09 <= 2 * o.half_extents[2] <= 0.11, o.id
    for o in cat.filter_objects(task="pour"):
        assert o.topology == ("box",) * 5
        bottom, wx, _, wy, _ = o.geoms
        inner_x = 2 * (wx.pos[0] - wx.size[0])
        inner_y = 2 * (wy.pos[1] - wy.size[1])
        inner_h = 2 * o.half_extents[2] - 2 * bottom.size[2]
        cap = (inner_x // (2 * r)) * (inner_y // (2 * r)) * (inner_h // (2 * r))
        assert cap >= cat.particles.count, (o.id, cap)
    for o in cat.filter_objects(task="pour", role="target"):
        assert 0.12 <= _max_horizontal(o) <= 0.18 and 2 * o.half_extents[2] < 0.09, o.id


def test_rest_height_and_geometry(cat):
    for o in cat.objects:
        assert o.rest_height == pytest.approx(o.half_extents[2], abs=1e-6)
        assert all(g.type in ("box", "capsule", "sphere") for g in o.geoms)


def test_topologies_small(cat):
    tops = cat.topologies()
    for k, v in tops.items():
        print(len(v), k)
    assert len(tops) <= 10
    assert sum(len(v) for v in tops.values()) == len(cat.objects)


def test_every_object_compiles_as_simulated(cat):
    """The tasks' object MJCF (envs.scene.object_body_xml): catalog mass (geom masses are written with 6 significant
    digits), sliding friction, condim 3 and the object collision bits on every geom."""
    for o in cat.objects:
        m = mujoco.MjModel.from_xml_string(f"<mujoco><worldbody>{object_body_xml('o', o)}</worldbody></mujoco>")
        b = m.body("o").id
        assert m.body_mass[b] == pytest.approx(o.mass, rel=1e-5), o.id
        assert np.all(m.body_inertia[b] > 0), o.id
        assert m.ngeom == o.ngeom and [int(t) for t in m.geom_type] == [
            int(getattr(mujoco.mjtGeom, f"mjGEOM_{g.type.upper()}")) for g in o.geoms], o.id
        np.testing.assert_allclose(m.geom_friction, np.tile([o.friction, 0.01, 0.001], (o.ngeom, 1)), rtol=1e-3, err_msg=o.id)
        assert np.all(m.geom_condim == 3), o.id
        assert np.all(m.geom_contype == scene_lib.OBJECT_CONTYPE) and np.all(m.geom_conaffinity == scene_lib.OBJECT_CONAFFINITY)


def test_task_scenes_use_the_object_generator(cat):
    """A task scene's object bodies are exactly `object_body_xml` of the catalog objects, named by role."""
    robot = scene_lib.robot_path("panda_inspire.xml")
    objects = {"source": cat.default_object("pour", "source"), "target": cat.default_object("pour", "target")}
    xml = scene_lib.scene_xml(robot, objects, cat.default_env, cat.particles)
    for role, obj in objects.items():
        assert object_body_xml(role, obj) in xml


def test_objects_rest_upright(cat):
    # drop each object 1 mm above a plane: it must settle where rest_height says, upright
    for o in cat.objects:
        xml = ('<mujoco><option timestep="0.002"/><worldbody>'
               '<geom type="plane" size="1 1 .1" contype="1" conaffinity="0"/>'
               f'{object_body_xml("o", o, pos=(0, 0, o.rest_height + 0.001))}</worldbody></mujoco>')
        m = mujoco.MjModel.from_xml_string(xml)
        d = mujoco.MjData(m)
        mujoco.mj_step(m, d, 300)
        tilt = 2 * math.acos(min(1.0, abs(d.qpos[3])))
        assert tilt < 0.05 and abs(d.qpos[2] - o.rest_height) < 0.003, o.id


def _texture(m, name="table_tex"):
    t = m.texture(name).id
    adr, n = m.tex_adr[t], m.tex_height[t] * m.tex_width[t] * m.tex_nchannel[t]
    return m.tex_data[adr : adr + n]


def test_environments(cat):
    for e in cat.environments:
        a = e.texture_attrs()
        xml = ('<mujoco><asset><texture name="t" type="2d" width="64" height="64" '
               + " ".join(f'{k}="{v}"' for k, v in a.items())
               + '/></asset><worldbody/></mujoco>')
        mujoco.MjModel.from_xml_string(xml)
        assert cat.rest_z(cat.default_object("grasp"), e) == pytest.approx(
            e.table_height + cat.default_object("grasp").rest_height)


def test_scene_renders_the_environment_texture(cat):
    """The table shows the environment's catalog texture (wood, marble, checker...), as an asset only: the bodies,
    geoms and object parameters the physics uses are those of the default environment's scene."""
    robot = scene_lib.robot_path("panda_inspire.xml")
    objects = {"object": cat.default_object("grasp")}
    base = scene_lib.compile_scene(robot, objects, cat.default_env).model
    table = base.geom("table").id
    textures = {}
    for e in cat.environments:
        m = scene_lib.compile_scene(robot, objects, e).model
        ref = mujoco.MjModel.from_xml_string(f"<mujoco><asset>{scene_lib.table_texture_xml(e)}</asset></mujoco>")
        np.testing.assert_array_equal(_texture(m), _texture(ref), err_msg=e.id)
        textures.setdefault(e.table_texture, []).append(_texture(m))
        for n in ("nbody", "ngeom", "njnt", "nq", "nv", "nu", "ntex", "nmat", "nlight"):
            assert getattr(m, n) == getattr(base, n), (e.id, n)
        for f in scene_lib.OBJECT_FIELDS + ("geom_type", "geom_contype", "geom_conaffinity", "geom_condim", "geom_matid"):
            a, b = np.array(getattr(m, f)), np.array(getattr(base, f))
            if f in ("geom_pos", "geom_friction", "geom_aabb", "geom_rgba"):  # the table's height, friction, colour
                keep = np.ones(m.ngeom, bool)
                keep[[table, m.geom("table_slab").id, m.geom("floor").id]] = False
                a, b = a[keep], b[keep]
            np.testing.assert_array_equal(a, b, err_msg=f"{e.id} {f}")
    for name in ("wood", "marble"):  # marked textures, not the flat colour the table once fell back to
        for tex in textures[name]:
            assert len(np.unique(tex.reshape(-1, 3), axis=0)) > 1, name
    for tex in textures["plain"]:
        assert len(np.unique(tex.reshape(-1, 3), axis=0)) == 1


def test_scene_topology(cat):
    box, can = cat.object("box_cube_5cm"), cat.object("can_soda")
    assert cat.scene_topology({"object": "box_cube_5cm"}) == (("object", box.topology),)
    assert cat.scene_topology([("object", box)]) == cat.scene_topology({"object": "box_cube_5cm"})
    assert cat.scene_topology({"object": can}) != cat.scene_topology({"object": box})
    src, tgt = cat.default_object("pour", "source"), cat.default_object("pour", "target")
    assert cat.scene_topology({"source": src, "target": tgt}) == (("source", src.topology), ("target", tgt.topology))


def test_task_roles(cat):
    for task in TASKS:
        assert tuple(TASK_ROLES[task]) == tuple(cat.poses_for(task).ranges)
        for role, kind in TASK_ROLES[task].items():
            assert cat.filter_objects(task=task, role=role) == cat.filter_objects(task=task, role=kind)
            assert cat.default_object(task, role).role == kind


def _footprint(o, yaw):
    hx, hy = o.half_extents[:2]
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    return hx * c + hy * s, hx * s + hy * c


def test_poses(cat):
    for task in TASKS:
        tp = cat.poses_for(task)
        assert len(tp.poses) >= 24 and tp.poses[0].id == "p00"
        for p in tp.poses:
            for role, v in p.placements.items():
                assert tp.ranges[role].contains(v)
        assert tp.default == "p00" and tp.pose("p00") is tp.default_pose is cat.default_pose(task)
        lo, hi = tp.ranges[next(iter(tp.ranges))]
        assert len(lo) == len(hi) == 3 and all(a <= b for a, b in zip(lo, hi))
        s = tp.sample(np.random.default_rng(0))
        assert set(s.placements) == set(tp.ranges)
    # pour: source and target never overlap (largest objects, every enumerated pose and range corners)
    src = max(cat.filter_objects(task="pour", role="source"), key=lambda o: max(o.half_extents[:2]))
    tgt = max(cat.filter_objects(task="pour", role="target"), key=lambda o: max(o.half_extents[:2]))
    for p in cat.poses_for("pour").poses:
        (xs, ys, ws), (xt, yt, wt) = p["source"], p["target"]
        fs, ft = _footprint(src, ws), _footprint(tgt, wt)
        assert abs(ys - yt) > fs[1] + ft[1] or abs(xs - xt) > fs[0] + ft[0], p.id
    rs, rt = cat.poses_for("pour").ranges["source"], cat.poses_for("pour").ranges["target"]
    gap = rt.y[0] - rs.y[1]
    assert gap > _footprint(src, max(map(abs, rs.yaw)))[1] + _footprint(tgt, max(map(abs, rt.yaw)))[1]


def test_unknown_id_messages(cat):
    with pytest.raises(CatalogError, match="can_sodaa") as ei:
        cat.object("can_sodaa")
    assert "can_soda" in str(ei.value).replace("can_sodaa", "")
    with pytest.raises(CatalogError, match="nowhere"):
        cat.environment("nowhere")
    with pytest.raises(CatalogError, match="p99"):
        cat.pose("grasp", "p99")
    with pytest.raises(CatalogError, match="graps"):
        cat.filter_objects(task="graps")


# ---------------------------------------------------------------------------------------------
# malformed catalogs


def _copy(tmp_path):
    d = tmp_path / "cat"
    shutil.copytree(paths.CATALOGS_DIR, d)
    return d


def _edit_objects(d, fn):
    objs = json.loads((d / "objects.json").read_text())
    fn(objs)
    (d / "objects.json").write_text(json.dumps(objs))


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda o: o.append(dict(o[4])), ["duplicate id", "box_cereal_mini", "first at entry 4"]),
        (lambda o: o[3].pop("mass"), ["entry 3", "box_block_6cm", "missing field 'mass'"]),
        (lambda o: o[2].__setitem__("mass", 0), ["box_tea", "'mass' must be positive"]),
        (lambda o: o[5]["geoms"][0].__setitem__("type", "cylinder"), ["box_soap", "geoms[0]", "'type'", "cylinder"]),
        (lambda o: o[9]["geoms"][1].__setitem__("size", [0.03]), ["can_soda", "geoms[1]", "'size'", "2 entries"]),
        (lambda o: o[1].__setitem__("tasks", ["grasp", "juggle"]), ["box_cube_5cm", "unknown task 'juggle'"]),
        (lambda o: o[1].__setitem__("role", "thing"), ["box_cube_5cm", "'role'", "thing"]),
        (lambda o: o[1]["geoms"][0].__setitem__("pos", [0, 0, 0.05]), ["box_cube_5cm", "bounding-box centre"]),
    ],
)
def test_malformed_objects(tmp_path, mutate, expect):
    d = _copy(tmp_path)
    _edit_objects(d, mutate)
    with pytest.raises(CatalogError) as ei:
        load_catalog(d)
    msg = str(ei.value)
    assert "objects.json" in msg
    for e in expect:
        assert e in msg, (e, msg)


def test_malformed_env_pose_particles(tmp_path):
    d = _copy(tmp_path)
    envs = json.loads((d / "environments.json").read_text())
    envs[1]["table_texture"] = "velvet"
    (d / "environments.json").write_text(json.dumps(envs))
    with pytest.raises(CatalogError, match=r"environments.json.*oak_kitchen.*table_texture.*velvet"):
        load_catalog(d)
    shutil.copy(paths.CATALOGS_DIR / "environments.json", d / "environments.json")

    poses = json.loads((d / "poses.json").read_text())
    poses["lift"]["poses"]["p03"]["object"] = [0.9, 0.0, 0.0]
    (d / "poses.json").write_text(json.dumps(poses))
    with pytest.raises(CatalogError, match=r"poses.json.*'lift'.*'p03'.*outside"):
        load_catalog(d)
    shutil.copy(paths.CATALOGS_DIR / "poses.json", d / "poses.json")

    (d / "particles.json").write_text(json.dumps({"radius": 0.012, "mass": 0.004, "friction": 0.5, "count": 3,
                                                  "rgba": [1, 0, 0, 1]}))
    with pytest.raises(CatalogError, match=r"particles.json.*count"):
        load_catalog(d)
    (d / "particles.json").write_text("{not json")
    with pytest.raises(CatalogError, match=r"particles.json.*not valid JSON"):
        load_catalog(d)


def test_user_can_add_an_object_by_json(tmp_path):
    d = _copy(tmp_path)
    new = {"id": "box_user", "category": "box", "tasks": ["grasp"], "role": "object", "mass": 0.1, "friction": 1.0,
           "geoms": [{"type": "box", "size": [0.02, 0.03, 0.04], "pos": [0, 0, 0], "rgba": [0.2, 0.4, 0.9, 1]}]}
    _edit_objects(d, lambda o: o.append(new))
    c = load_catalog(d)
    o = c.object("box_user")
    assert o.topology == ("box",) and o.rest_height == pytest.approx(0.04)
    assert len(c.topologies()) == len(load_catalog().topologies())
