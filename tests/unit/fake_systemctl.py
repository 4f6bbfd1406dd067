"""A stand-in for systemctl in the unit tests of gpuops.sharing.mps's units (the ``units`` fixture of
tests/unit/plugins/modules/test_mps.py puts a ``systemctl`` wrapper that runs this first on PATH).

Units are the instances of the template unit in $FAKE_SYSTEMCTL_UNIT_DIR; their state is kept in
$FAKE_SYSTEMCTL_STATE (JSON), every call is recorded there.  Starting an instance runs its ExecStart
(the real gpuops-mps-exec and gpusim's control daemon) in the background with the variables of its
EnvironmentFile, and waits for the control socket as the unit's ExecStartPost does; stopping sends
the ExecStop quit.  Enough of systemd for the module's one-batch calls, nothing more.
"""
import json
import os
import shlex
import subprocess
import sys
import time

STATE = os.environ["FAKE_SYSTEMCTL_STATE"]
UNIT_DIR = os.environ["FAKE_SYSTEMCTL_UNIT_DIR"]


def load():
    try:
        with open(STATE) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {"units": {}, "calls": []}


def template_of(unit):
    path = os.path.join(UNIT_DIR, unit.split("@")[0] + "@.service")
    if not os.path.exists(path):
        return None
    lines = {}
    with open(path) as fh:
        for line in fh:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep and not line.startswith("#"):
                lines.setdefault(key, []).append(value)
    return lines


def environment(unit, lines):
    instance = unit.split("@", 1)[1][: -len(".service")]
    env = dict(os.environ)
    with open(lines["EnvironmentFile"][0].replace("%i", instance)) as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                key, _sep, value = line.rstrip("\n").partition("=")
                env[key] = shlex.split(value)[0] if value else ""
    return env


def start(unit, units):
    lines = template_of(unit)
    env = environment(unit, lines)
    for key in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
        os.makedirs(env[key], exist_ok=True)
    argv = shlex.split(lines["ExecStart"][0])
    with open(os.path.join(env["CUDA_MPS_LOG_DIRECTORY"], "unit.log"), "a") as log:
        subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)   # the daemon: waited for below
    deadline = time.monotonic() + 10
    while not os.path.exists(os.path.join(env["CUDA_MPS_PIPE_DIRECTORY"], "control")):
        if time.monotonic() > deadline:
            units.setdefault(unit, {})["active"] = "failed"
            return False
        time.sleep(0.05)
    units.setdefault(unit, {})["active"] = "active"
    return True


def stop(unit, units):
    lines = template_of(unit)
    if units.get(unit, {}).get("active") == "active" and lines:
        env = environment(unit, lines)
        control = shlex.split(lines["ExecStart"][0])[-2]
        subprocess.run([control], input="quit -t 1\n", env=env, capture_output=True, text=True, check=False)
        deadline = time.monotonic() + 10
        while os.path.exists(os.path.join(env["CUDA_MPS_PIPE_DIRECTORY"], "control")) and time.monotonic() < deadline:
            time.sleep(0.05)
    units.setdefault(unit, {})["active"] = "inactive"


def main(argv):
    state = load()
    state["calls"].append(argv)
    units = state["units"]
    rc = 0
    names = [a for a in argv[1:] if not a.startswith("-")]
    if argv[0] == "show":
        for n, unit in enumerate(names):
            known = template_of(unit) is not None
            u = units.get(unit, {})
            print(("\n" if n else "") + f"Id={unit}\nLoadState={'loaded' if known else 'not-found'}\n"
                  f"ActiveState={u.get('active', 'inactive')}\nUnitFileState={u.get('enabled', '') or ''}")
    elif argv[0] == "enable":
        for unit in names:
            if template_of(unit) is None:
                print(f"Failed to enable unit: Unit file {unit} does not exist.", file=sys.stderr)
                rc = 1
                continue
            units.setdefault(unit, {})["enabled"] = "enabled"
            if "--now" in argv and units[unit].get("active") != "active" and not start(unit, units):
                rc = 1
    elif argv[0] == "restart":
        for unit in names:
            stop(unit, units)
            rc = rc or (0 if start(unit, units) else 1)
    elif argv[0] == "disable":
        for unit in names:
            units.setdefault(unit, {})["enabled"] = "disabled"
            if "--now" in argv:
                stop(unit, units)
    elif argv[0] != "daemon-reload":
        print(f"fake systemctl: {argv[0]} is not simulated", file=sys.stderr)
        rc = 1
    with open(STATE, "w") as fh:
        json.dump(state, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
