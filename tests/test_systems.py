"""The system registry: loading, errors, parameter randomization, initial states."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from envs.systems import (
    DEFAULT_RANDOMIZATION,
    describe_systems,
    get_system,
    list_systems,
)
from gndesign.errors import GndesignError, ModelError

# name -> (nq, nv, nu, control timestep, substeps)
EXPECTED = {
    "pendulum": (1, 1, 1, 0.02, 1),
    "cartpole": (2, 2, 1, 0.01, 1),
    "acrobot": (2, 2, 1, 0.01, 1),
    "cheetah": (9, 9, 6, 0.01, 1),
    "swimmer3": (5, 5, 2, 0.03, 15),
    "swimmer6": (8, 8, 5, 0.03, 15),
    "swimmer10": (12, 12, 9, 0.03, 15),
}

SIMPLE_MJCF = """<mujoco>
  <option timestep="0.005"/>
  <worldbody>
    <body name="arm"><joint name="j" type="hinge" axis="0 1 0" damping="0.3"/>
      <geom type="capsule" fromto="0 0 0 0 0 -0.5" size="0.05"/></body>
  </worldbody>
  <actuator><motor joint="j" gear="2" ctrlrange="-1 1" ctrllimited="true"/></actuator>
</mujoco>
"""


@pytest.fixture(scope="module")
def systems():
    return {name: get_system(name) for name in EXPECTED}


def test_registry_lists_all_systems():
    assert list_systems() == ["pendulum", "cartpole", "acrobot", "swimmerN", "cheetah"]
    names = [n for n, _ in describe_systems()]
    assert set(list_systems()) <= set(names)
    assert any(".xml" in n for n in names)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_system_loads_with_expected_sizes(systems, name):
    system = systems[name]
    nq, nv, nu, dt, n_sub = EXPECTED[name]
    assert (system.nq, system.nv, system.nu) == (nq, nv, nu)
    assert system.name == name
    assert system.n_substeps == n_sub
    assert system.control_timestep == pytest.approx(dt)
    assert system.n_substeps * system.model.opt.timestep == pytest.approx(system.control_timestep)
    # The stored text and assets rebuild the same model (datasets rely on it).
    rebuilt = mujoco.MjModel.from_xml_string(system.mjcf, system.assets)
    assert (rebuilt.nq, rebuilt.nv, rebuilt.nu, rebuilt.nbody) == (nq, nv, nu, system.nbody)
    assert len(system.mjcf_sha256()) == 64


def test_mjcf_file_system(tmp_path):
    path = tmp_path / "arm.xml"
    path.write_text(SIMPLE_MJCF)
    system = get_system(str(path))
    assert system.name == "arm"
    assert (system.nq, system.nv, system.nu) == (1, 1, 1)
    assert system.control_timestep == pytest.approx(0.005)
    assert system.n_substeps == 1


def test_mjcf_file_with_include_gathers_assets(tmp_path):
    (tmp_path / "defaults.xml").write_text('<mujoco><default><geom rgba="1 0 0 1"/></default></mujoco>')
    path = tmp_path / "main.xml"
    path.write_text(SIMPLE_MJCF.replace("<mujoco>", '<mujoco>\n  <include file="defaults.xml"/>'))
    system = get_system(path)
    assert "defaults.xml" in system.assets
    rebuilt = mujoco.MjModel.from_xml_string(system.mjcf, system.assets)
    assert rebuilt.nv == 1


@pytest.mark.parametrize("name", ["unicycle", "pendulums", "swimmer", "swimmer2", "swimmerX"])
def test_bad_names_are_refused(name):
    with pytest.raises(GndesignError) as info:
        get_system(name)
    msg = str(info.value)
    assert "\n" not in msg
    if name.startswith("swimmer"):
        assert "integer >= 3" in msg
    else:
        assert "cartpole" in msg and "swimmerN" in msg and "MJCF" in msg


def test_malformed_mjcf_file(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text('<mujoco><worldbody><body><geom size="abc"/></body></worldbody></mujoco>')
    with pytest.raises(ModelError) as info:
        get_system(str(path))
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg and "size" in msg


def test_malformed_mjcf_text():
    with pytest.raises(ModelError, match="cannot load MJCF"):
        get_system("<mujoco><worldbody><body><joint type='nope'/></body></worldbody></mujoco>")


def test_missing_mjcf_file(tmp_path):
    with pytest.raises(GndesignError, match="does not exist"):
        get_system(str(tmp_path / "nothing.xml"))


@pytest.mark.parametrize("name", ["cartpole", "cheetah", "swimmer6"])
def test_sample_params_within_ranges_and_written(systems, name):
    system = systems[name]
    nominal = system.nominal_params()
    rng = np.random.default_rng(1)
    for _ in range(20):
        params = system.sample_params(rng)
        assert set(params) == {"body_mass", "body_inertia", "dof_damping", "actuator_gear"}
        for key, shape in system.param_shapes().items():
            assert params[key].shape == shape and params[key].dtype == np.float64
        lo, hi = DEFAULT_RANDOMIZATION["body_mass"]
        moving = nominal["body_mass"] > 0
        f = params["body_mass"][moving] / nominal["body_mass"][moving]
        assert np.all((f >= lo) & (f <= hi))
        # Inertia follows its body's mass factor.
        np.testing.assert_allclose(params["body_inertia"][moving], nominal["body_inertia"][moving] * f[:, None])
        damped = nominal["dof_damping"] > 0
        g = params["dof_damping"][damped] / nominal["dof_damping"][damped]
        assert np.all((g >= 0.8) & (g <= 1.25))
        assert np.all(params["dof_damping"][~damped] == 0)
        gear_f = params["actuator_gear"][:, 0] / nominal["actuator_gear"][:, 0]
        assert np.all((gear_f >= 0.8) & (gear_f <= 1.25))
        model = system.make_model(params)
        for key in params:
            np.testing.assert_array_equal(getattr(model, key), params[key])
    # The base model is left alone.
    np.testing.assert_array_equal(system.model.body_mass, nominal["body_mass"])


def test_randomization_is_configurable():
    fixed = get_system("cartpole", randomize=False)
    params = fixed.sample_params(np.random.default_rng(0))
    for key, value in fixed.nominal_params().items():
        np.testing.assert_array_equal(params[key], value)
    narrow = get_system("cartpole", randomization={"body_mass": (1.5, 1.5)})
    params = narrow.sample_params(np.random.default_rng(0))
    np.testing.assert_allclose(params["body_mass"], 1.5 * narrow.nominal_params()["body_mass"])
    with pytest.raises(GndesignError, match="randomization"):
        get_system("cartpole", randomization={"friction": (0.5, 2.0)})


def test_make_model_validates(systems):
    system = systems["cartpole"]
    params = system.nominal_params()
    with pytest.raises(GndesignError, match="shape"):
        system.make_model({**params, "dof_damping": np.zeros(5)})
    with pytest.raises(GndesignError, match="keys"):
        system.make_model({k: v for k, v in params.items() if k != "actuator_gear"})
    bad = {**params, "body_mass": params["body_mass"].copy()}
    bad["body_mass"][1] = 0.0
    with pytest.raises(GndesignError, match="positive"):
        system.make_model(bad)
    bad["body_mass"][1] = np.nan
    with pytest.raises(GndesignError, match="non-finite"):
        system.make_model(bad)


@pytest.mark.parametrize("name", ["pendulum", "cartpole", "acrobot", "swimmer6"])
def test_initial_states_in_range_and_cover_circle(systems, name):
    system = systems[name]
    model = system.model
    rng = np.random.default_rng(0)
    states = [system.initial_state(model, rng) for _ in range(200)]
    qpos = np.stack([s[0] for s in states])
    qvel = np.stack([s[1] for s in states])
    assert qpos.shape == (200, model.nq) and qvel.shape == (200, model.nv)
    assert np.all(np.isfinite(qpos)) and np.all(np.isfinite(qvel))
    assert np.all(qvel.std(axis=0) > 0)
    for j in range(model.njnt):
        a = model.jnt_qposadr[j]
        if model.jnt_limited[j]:
            lo, hi = model.jnt_range[j]
            assert np.all((qpos[:, a] >= lo) & (qpos[:, a] <= hi))
            # Covers the range, not just the middle.
            assert np.ptp(qpos[:, a]) > 0.8 * (hi - lo)
        elif model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE:
            assert np.all(np.abs(qpos[:, a]) <= np.pi)
            assert np.ptp(qpos[:, a]) > 5.0


def test_cartpole_covers_rail_and_circle(systems):
    system = systems["cartpole"]
    rng = np.random.default_rng(3)
    qpos = np.stack([system.initial_state(system.model, rng)[0] for _ in range(200)])
    assert qpos[:, 0].min() < -1.4 and qpos[:, 0].max() > 1.4  # rail is [-1.8, 1.8]
    assert qpos[:, 1].min() < -2.8 and qpos[:, 1].max() > 2.8


def test_cheetah_settles_on_floor(systems):
    system = systems["cheetah"]
    rng = np.random.default_rng(0)
    model = system.make_model(system.sample_params(rng))
    data = mujoco.MjData(model)
    for _ in range(3):
        qpos, qvel = system.initial_state(model, rng)
        data.qpos[:], data.qvel[:] = qpos, qvel
        mujoco.mj_forward(model, data)
        depth = min((data.contact[i].dist for i in range(data.ncon)), default=0.0)
        assert data.ncon > 0  # resting on the floor, not floating
        assert depth > -0.02  # and not sunk into it
        lo, hi = model.jnt_range[3:].T
        assert np.all(qpos[3:] >= lo - 0.05) and np.all(qpos[3:] <= hi + 0.05)


def test_initial_state_is_deterministic(systems):
    system = systems["cheetah"]
    a = system.initial_state(system.model, np.random.default_rng(7))
    b = system.initial_state(system.model, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
