"""dexfly-robomimic-v1 HDF5 datasets: round trip, atomic writes, merge and validation errors."""

import json

import h5py
import numpy as np
import pytest

import dexfly  # noqa: F401
from dexfly.dataset import FORMAT, DatasetError, Episode, merge_datasets, read_dataset, write_dataset

ENV_KWARGS = {"robot": "panda_inspire", "control_freq": 20}


def make_episode(T=7, seed=0, n_arms=1, n_obj=1, n_sub=2, **kw):
    r = np.random.default_rng(seed)
    sub = np.zeros((T, n_arms, n_sub), np.uint8)
    if n_sub >= 2:
        sub[T // 2:, :, 0] = 1
        sub[-1:, :, 1] = 1
    args = dict(
        actions=r.normal(size=(T, 15 * n_arms)), states=r.normal(size=(T, 40)), rewards=np.linspace(0, 1, T),
        obs={"obj": r.normal(size=(T, 13 * n_obj)), "prop": r.normal(size=(T, 34 * n_arms))},
        ee_target_pose=r.normal(size=(T, n_arms, 7)), hand_target=r.normal(size=(T, n_arms, 6)),
        object_poses=r.normal(size=(T, n_obj, 7)), subtask_end=sub, success=bool(seed % 2 == 0),
        object_ids=[f"obj{i}" for i in range(n_obj)], env_id="studio", pose_id=f"p{seed:02d}", seed=seed,
        source="seed",
    )
    args.update(kw)
    return Episode(**args)


def write(path, n=4, task="grasp", **kw):
    return write_dataset(path, [make_episode(T=5 + i, seed=i) for i in range(n)], task=task, env_args=ENV_KWARGS, **kw)


def test_round_trip(tmp_path):
    eps = [make_episode(T=5 + i, seed=i) for i in range(10)]
    eps[3] = make_episode(T=4, seed=3, source=None, extra={"iteration": 2})
    p = write_dataset(tmp_path / "d.hdf5", eps, task="grasp", env_args=ENV_KWARGS, extra_attrs={"note": "x", "it": 1,
                      "cfg": {"a": [1, 2]}}, train_fraction=0.8, seed=1)
    ds = read_dataset(p, task="grasp")
    assert ds.task == "grasp" and len(ds) == 10
    assert ds.env_args == {"env_name": "grasp", "type": "dexfly-mjx", "env_kwargs": ENV_KWARGS}
    assert ds.attrs["note"] == "x" and ds.attrs["it"] == 1 and ds.attrs["cfg"] == {"a": [1, 2]}
    assert ds.demo_names == tuple(f"demo_{i}" for i in range(10))
    assert len(ds.masks["train"]) == 8 and len(ds.masks["valid"]) == 2
    assert set(ds.masks["train"]) | set(ds.masks["valid"]) == set(ds.demo_names)
    assert len(ds.train_episodes()) == 8
    for a, b in zip(eps, ds.episodes):
        for k in ("actions", "states", "rewards", "dones", "ee_target_pose", "hand_target", "object_poses",
                  "subtask_end"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
            assert getattr(b, k).dtype == (np.uint8 if k in ("dones", "subtask_end") else np.float32)
        for k in ("obj", "prop"):
            np.testing.assert_array_equal(a.obs[k], b.obs[k])
        assert (a.success, a.object_ids, a.env_id, a.pose_id, a.seed, a.source, dict(a.extra)) == \
               (b.success, b.object_ids, b.env_id, b.pose_id, b.seed, b.source, dict(b.extra))
        assert b.dones[-1] == 1 and b.dones[:-1].sum() == 0
    with h5py.File(p) as f:  # robomimic-compatible layout
        assert f.attrs["dexfly_format"] == FORMAT
        assert f["data"].attrs["total"] == sum(e.num_samples for e in eps) == ds.total
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "grasp"
        assert f["data/demo_0"].attrs["num_samples"] == 5
        assert f["mask/train"][()].dtype.kind == "S"


def test_atomic_write(tmp_path):
    p = tmp_path / "d.hdf5"

    def boom():
        yield make_episode(seed=0)
        raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        write_dataset(p, boom(), task="grasp", env_args=ENV_KWARGS)
    assert list(tmp_path.iterdir()) == []  # no partial or temp file
    write(p, n=2)
    before = p.read_bytes()
    with pytest.raises(DatasetError, match="not an Episode"):
        write_dataset(p, [make_episode(), "oops"], task="grasp", env_args=ENV_KWARGS)
    assert p.read_bytes() == before and [x.name for x in tmp_path.iterdir()] == ["d.hdf5"]


def test_merge(tmp_path):
    a, b = write(tmp_path / "a.hdf5", n=3), write(tmp_path / "b.hdf5", n=2)
    out = merge_datasets([a, b], tmp_path / "m.hdf5")
    ds = read_dataset(out)
    assert len(ds) == 5 and ds.attrs["merged_from"] == [str(a), str(b)]
    np.testing.assert_array_equal(ds.episodes[3].actions, read_dataset(b).episodes[0].actions)
    merge_datasets([a, b], a)  # in place
    assert len(read_dataset(a)) == 5
    write(tmp_path / "c.hdf5", n=1, task="pour")
    with pytest.raises(DatasetError, match="pour"):
        merge_datasets([a, tmp_path / "c.hdf5"], tmp_path / "m2.hdf5")


def test_corrupt_files(tmp_path):
    p = write(tmp_path / "d.hdf5")
    data = p.read_bytes()
    trunc = tmp_path / "trunc.hdf5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"trunc\.hdf5.*(truncated|corrupt)"):
        read_dataset(trunc)
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DatasetError, match=r"junk\.hdf5.*not a readable HDF5"):
        read_dataset(junk)
    with pytest.raises(DatasetError, match="no such file"):
        read_dataset(tmp_path / "missing.hdf5")


def test_foreign_robomimic_file(tmp_path):
    p = tmp_path / "robomimic.hdf5"
    with h5py.File(p, "w") as f:
        g = f.create_group("data")
        g.attrs["total"] = 3
        g.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}})
        d = g.create_group("demo_0")
        d.create_dataset("actions", data=np.zeros((3, 7)))
        d.attrs["num_samples"] = 3
    with pytest.raises(DatasetError, match=r"robomimic\.hdf5.*dexfly_format.*robomimic"):
        read_dataset(p)


def test_wrong_task(tmp_path):
    p = write(tmp_path / "d.hdf5", task="lift")
    with pytest.raises(DatasetError, match=r"d\.hdf5.*wrong task.*'lift'.*'grasp'"):
        read_dataset(p, task="grasp")


def _tamper(p, fn):
    with h5py.File(p, "a") as f:
        fn(f)


def test_inconsistent_missing_nan_numsamples(tmp_path):
    p = write(tmp_path / "d.hdf5")

    def shorten(f):
        del f["data/demo_1/obs/prop"]
        f["data/demo_1/obs/prop"] = np.zeros((2, 34), np.float32)

    _tamper(p, shorten)
    with pytest.raises(DatasetError, match=r"d\.hdf5.*demo_1.*inconsistent lengths.*obs/prop has 2 steps"):
        read_dataset(p)

    p = write(tmp_path / "d.hdf5")
    _tamper(p, lambda f: f["data/demo_2/actions"].__setitem__((1, 3), np.nan))
    with pytest.raises(DatasetError, match=r"demo_2.*actions contains NaN"):
        read_dataset(p)

    p = write(tmp_path / "d.hdf5")
    _tamper(p, lambda f: f["data/demo_0/obs/obj"].__setitem__((0, 0), np.inf))
    with pytest.raises(DatasetError, match=r"demo_0.*obs/obj contains NaN/inf"):
        read_dataset(p)

    p = write(tmp_path / "d.hdf5")
    _tamper(p, lambda f: f.__delitem__("data/demo_3/datagen/subtask_end"))
    with pytest.raises(DatasetError, match=r"demo_3 is missing datasets \['datagen/subtask_end'\]"):
        read_dataset(p)

    p = write(tmp_path / "d.hdf5")
    _tamper(p, lambda f: f["data/demo_0"].attrs.__setitem__("num_samples", 99))
    with pytest.raises(DatasetError, match=r"demo_0 num_samples mismatch.*99.*5"):
        read_dataset(p)

    p = write(tmp_path / "d.hdf5")
    _tamper(p, lambda f: f["data"].attrs.__setitem__("total", 1))
    with pytest.raises(DatasetError, match=r"data.total = 1"):
        read_dataset(p)


def test_episode_validation(tmp_path):
    with pytest.raises(DatasetError, match="inconsistent lengths: rewards has 3 steps but actions has 7"):
        make_episode(T=7, rewards=np.zeros(3))
    with pytest.raises(DatasetError, match="object_poses has 1 objects but object_ids lists 2"):
        make_episode(object_ids=["a", "b"])
    with pytest.raises(DatasetError, match="ee_target_pose last dim must be 7"):
        make_episode(ee_target_pose=np.zeros((7, 1, 6)))
    with pytest.raises(DatasetError, match="missing obs/prop"):
        make_episode(obs={"obj": np.zeros((7, 13))})
    ep = make_episode(T=3, n_arms=2, n_obj=2, n_sub=0)
    assert ep.n_arms == 2 and ep.subtask_end.shape == (3, 2, 0) and ep.num_samples == 3
    p = write_dataset(tmp_path / "two.hdf5", [ep], task="lift", env_args={"env_kwargs": {"n_envs": 4}})
    back = read_dataset(p).episodes[0]
    assert back.subtask_end.shape == (3, 2, 0) and back.object_poses.shape == (3, 2, 7)
    assert read_dataset(p).masks["train"] == ("demo_0",) and read_dataset(p).masks["valid"] == ()
