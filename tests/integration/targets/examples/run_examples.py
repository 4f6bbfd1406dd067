"""Run every module's EXAMPLES and every role README example against gpusim hosts.

    python run_examples.py OUTPUT_DIR [NAME...]   (runme.sh; gpusim on PYTHONPATH, see setup_gpusim)
        NAME: only the modules or roles of that name

Each source (plugins/modules/<m>.py EXAMPLES; the ```yaml blocks of roles/<r>/README.md) has a
scenario in scenarios.yml: the simulated host it needs (model, GPU count, vGPU guest), the
files it reads, how the host's paths map into this run's folder (no test writes outside it), and
per example whether it must succeed, must fail with a given message (`fails`), or is a known
failure still to be fixed (`xfail`: it must still fail, so a fix shows up here; each is printed),
and the `gpusim` commands to run right before it (`before`: a client connecting to a daemon that
an earlier example started).
A module example or README block without a scenario entry is an error, so new examples are covered.

Module examples of one source run in order in one play (later ones use what earlier ones
registered), each wrapped in a block whose outcome is recorded. A role README's play runs once per
variables block of the README (the blocks are the README's group_vars examples).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
# the collection under test (runme.sh: ansible-test runs a copy of this target, not the tree's own)
COLLECTION = os.environ.get("GPUOPS_COLLECTION") or os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
SIMULATOR = os.environ["PYTHONPATH"].split(os.pathsep)[0]   # gpusim, first (setup_gpusim/gpusim-env.sh)


def module_examples(name: str) -> list[dict]:
    with open(os.path.join(COLLECTION, "plugins", "modules", name + ".py")) as fh:
        tree = ast.parse(fh.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "EXAMPLES" for t in node.targets):
            return yaml.safe_load(node.value.value)
    raise SystemExit(f"plugins/modules/{name}.py has no EXAMPLES")


def readme_blocks(role: str) -> tuple[list[dict], list[dict]]:
    """(variables blocks, plays) of roles/<role>/README.md's ```yaml blocks."""
    with open(os.path.join(COLLECTION, "roles", role, "README.md")) as fh:
        text = fh.read()
    variables, plays = [], []
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S):
        data = yaml.safe_load(block)
        if isinstance(data, dict):
            variables.append(data)
        elif isinstance(data, list):
            plays.extend(data)
    return variables, plays


def rewrite(value, paths: dict):
    """The host's paths in an example, mapped into this run's folder."""
    if isinstance(value, str):
        for old, new in paths.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [rewrite(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: rewrite(v, paths) for k, v in value.items()}
    return value


def setup_tasks(host: dict, state: str, out: str) -> list[dict]:
    fresh = {"name": "a fresh host: no daemon of an earlier play", "ansible.builtin.command": {
        "argv": ["{{ ansible_python_interpreter }}", os.path.join(HERE, "fresh_host.py"), out]}, "changed_when": False}
    init = ["init", "--force", "--model", host["model"], "--gpus", str(host.get("gpus", 1))]
    if host.get("vgpu_guest"):
        init += ["--vgpu-guest", host["vgpu_guest"]]
    if host.get("mig"):
        init.append("--mig-enabled")
    tasks = [fresh, {"name": "gpusim host for the examples", "ansible.builtin.command": {
        "argv": ["{{ ansible_python_interpreter }}", "-m", "gpusim", "--state", state, *init]}, "changed_when": True}]
    for args in host.get("smi", []):
        tasks.append({"name": "nvidia-smi " + " ".join(args), "ansible.builtin.command": {
            "argv": ["{{ ansible_python_interpreter }}", os.path.join(SIMULATOR, "libexec", "nvidia-smi.py"), *args]},
            "environment": {"GPUSIM_STATE": state}, "changed_when": True})
    for args in host.get("gpusim", []):
        tasks.append({"name": "gpusim " + " ".join(args), "ansible.builtin.command": {
            "argv": ["{{ ansible_python_interpreter }}", "-m", "gpusim", "--state", state, *args]},
            "changed_when": True})
    return tasks


def record(key: str, task: dict) -> dict:
    ok = {"ansible.builtin.set_fact": {"example_outcomes": "{{ example_outcomes | combine({%r: {'failed': false}}) }}"
                                       % key}}
    bad = {"ansible.builtin.set_fact": {"example_outcomes": "{{ example_outcomes | combine({%r: {'failed': true, "
                                        "'msg': ansible_failed_result.msg | default('') | string}}) }}" % key}}
    return {"name": f"example {key}", "block": [task, {"name": "record success", **ok}],
            "rescue": [{"name": "record failure", **bad}]}


def play_for(scenario: dict, out: str, name: str, tasks: list[dict], extra_vars: dict | None = None,
             host: dict | None = None, defaults: dict | None = None) -> dict:
    """One play; ``defaults`` (an example's own module_defaults) is merged over the scenario's per
    module, a value of null taking that option out."""
    host = host or scenario["host"]
    module_defaults = {m: dict(v) for m, v in (scenario.get("module_defaults") or {}).items()}
    for module, options in (defaults or {}).items():
        merged = module_defaults.setdefault(module, {})
        for option, value in options.items():
            if value is None:
                merged.pop(option, None)
            else:
                merged[option] = value
    state = os.path.join(out, name + ".json")
    variables = {"example_outcomes": {}, **rewrite(scenario.get("vars", {}), {"@OUT@": out}), **(extra_vars or {})}
    return {"name": f"examples of {name}", "hosts": "localhost", "gather_facts": False,
            "environment": {"GPUSIM_STATE": state, **rewrite(scenario.get("environment", {}), {"@OUT@": out})},
            "module_defaults": rewrite(module_defaults, {"@OUT@": out}),
            "vars": variables,
            "tasks": setup_tasks(host, state, out) + tasks + [{
                "name": "write the outcomes", "ansible.builtin.copy": {
                    "content": "{{ example_outcomes | to_json }}", "dest": os.path.join(out, name + ".outcomes.json"),
                    "mode": "0644"}}]}


def write_files(scenario: dict, out: str, playdir: str) -> None:
    for dest, spec in (scenario.get("files") or {}).items():
        dest = os.path.join(playdir, dest) if not dest.startswith("@OUT@") else dest.replace("@OUT@", out)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if "fixture" in spec:
            with open(os.path.join(COLLECTION, spec["fixture"])) as fh:
                content = fh.read()
        elif "gpusim_token" in spec:
            content = subprocess.run([sys.executable, "-m", "gpusim", "license", "token", "--server",
                                      spec["gpusim_token"]], capture_output=True, text=True, check=True).stdout.strip()
        else:
            content = spec["content"]
        with open(dest, "w") as fh:
            fh.write(content)


def expected(entry: dict) -> str:
    return "xfail" if "xfail" in entry else "fails" if "fails" in entry else "ok"


def main(out: str, only: list[str]) -> int:
    with open(os.path.join(HERE, "scenarios.yml")) as fh:
        scenarios = yaml.safe_load(fh)
    modules = sorted(n[:-3] for n in os.listdir(os.path.join(COLLECTION, "plugins", "modules"))
                     if n.endswith(".py") and not n.startswith("_"))
    roles = sorted(os.listdir(os.path.join(COLLECTION, "roles")))
    problems, report = [], []
    for source in [f"module {m}" for m in modules] + [f"role {r}" for r in roles]:
        kind, name = source.split()
        if only and name not in only:
            continue
        scenario = scenarios.get(source)
        if scenario is None:
            problems.append(f"{source}: no scenario in scenarios.yml")
            continue
        if scenario.get("elsewhere"):
            # its examples need what this host lacks (FUSE sysfs, a controller-only plugin's own
            # harness): the test named there runs every one of them, which it must say it does
            where = os.path.join(COLLECTION, scenario["elsewhere"])
            text = ""
            paths = [where] if os.path.isfile(where) else \
                [os.path.join(d, n) for d, _dirs, names in os.walk(where) for n in sorted(names)]
            for path in paths:
                with open(path, errors="replace") as fh:
                    text += fh.read()
            marker = "README" if kind == "role" else "EXAMPLES"
            if marker not in text:
                problems.append(f"{source}: scenarios.yml says {scenario['elsewhere']} runs its examples, "
                                f"but that test does not read its {marker}")
            else:
                report.append(f"{source}: its examples run in {scenario['elsewhere']} ({scenario['why']})")
            continue
        playdir = os.path.join(out, name + "-play")
        os.makedirs(playdir, exist_ok=True)
        write_files(scenario, out, playdir)
        paths = {k: v.replace("@OUT@", out) for k, v in (scenario.get("paths") or {}).items()}
        entries = scenario.get("examples") or {}
        plays, keys = [], []
        if kind == "module":
            groups: list[tuple[dict, list]] = []   # runs of examples on the same host, in order
            for task in module_examples(name):
                key = task["name"]
                keys.append(key)
                if key not in entries:
                    problems.append(f"{source}: example {key!r} has no entry in scenarios.yml")
                    entries[key] = {}
                for module, replacement in (scenario.get("replace") or {}).items():
                    if module in task:
                        del task[module]
                        task.update(replacement)
                host = (entries[key] or {}).get("host") or scenario["host"]
                defaults = (entries[key] or {}).get("module_defaults")
                if not groups or groups[-1][0] != (host, defaults):
                    groups.append(((host, defaults), []))
                for args in (entries[key] or {}).get("before", []):
                    # what the example needs that its earlier examples do not make (a connected client)
                    groups[-1][1].append({"name": "gpusim " + " ".join(args), "ansible.builtin.command": {
                        "argv": ["{{ ansible_python_interpreter }}", "-m", "gpusim", *rewrite(args, {"@OUT@": out})]},
                        "changed_when": True})
                groups[-1][1].append(record(key, rewrite(task, paths)))
            for n, ((host, defaults), tasks) in enumerate(groups):
                plays.append(play_for(scenario, out, f"{name}-{n + 1}", tasks, host=host, defaults=defaults))
        else:
            variables, readme_plays = readme_blocks(name)
            for play in readme_plays:
                # the play with each variables block (its own role vars give way to the block's), and
                # as written when it has role vars of its own or the README has no variables block
                runs = [(f"vars block {n + 1}", block, True) for n, block in enumerate(variables)]
                if not variables or any(isinstance(r, dict) and r.get("vars") for r in play["roles"]):
                    runs.append(("as written", {}, False))
                for label, block, drop in runs:
                    key = f"{play['name']} / {label}"
                    keys.append(key)
                    if key not in entries:
                        problems.append(f"{source}: README example {key!r} has no entry in scenarios.yml")
                        entries[key] = {}
                    includes = [{"name": f"role {r if isinstance(r, str) else r['role']}",
                                 "ansible.builtin.include_role": {"name": r if isinstance(r, str) else r["role"]},
                                 "vars": {} if drop or isinstance(r, str) else rewrite(r.get("vars", {}), paths)}
                                for r in play["roles"]]
                    tasks = [record(key, {"name": "the README's play", "block": includes})]
                    merged = {**rewrite(block, paths), **rewrite(scenario.get("role_vars", {}), {"@OUT@": out})}
                    host = (entries[key] or {}).get("host")
                    plays.append(play_for(scenario, out, f"{name}-{len(plays) + 1}", tasks, merged, host=host))
        playbook = os.path.join(playdir, "examples.yml")
        with open(playbook, "w") as fh:
            yaml.safe_dump(plays, fh, sort_keys=False)
        started = time.monotonic()
        done = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local",
                               "-e", f"ansible_python_interpreter={sys.executable}", "-e", "ansible_become=false",
                               playbook], cwd=playdir, capture_output=True, text=True, check=False)
        report.append(f"{source}: {len(plays)} plays in {time.monotonic() - started:.0f} s")
        outcomes = {}
        for play in plays:
            path = play["tasks"][-1]["ansible.builtin.copy"]["dest"]
            if os.path.exists(path):
                with open(path) as fh:
                    outcomes.update(json.load(fh))
        if done.returncode and not outcomes:
            problems.append(f"{source}: ansible-playbook failed before any example ran:\n{done.stdout[-3000:]}")
            continue
        for key in keys:
            entry, got = entries.get(key) or {}, outcomes.get(key)
            want = expected(entry)
            if got is None:
                problems.append(f"{source}: {key!r} did not run")
                continue
            if want == "ok" and got["failed"]:
                problems.append(f"{source}: {key!r} failed: {got['msg']}")
            elif want == "fails" and not (got["failed"] and entry["fails"] in got["msg"]):
                problems.append(f"{source}: {key!r} should fail with {entry['fails']!r}, got "
                                + (repr(got["msg"]) if got["failed"] else "success"))
            elif want == "xfail" and not got["failed"]:
                problems.append(f"{source}: {key!r} is listed as a known failure ({entry['xfail']}) but now "
                                "succeeds: remove its xfail")
            else:
                note = {"ok": "ok", "fails": "fails as it must", "xfail": "KNOWN FAILURE"}[want]
                report.append(f"{source}: {key}: {note}" + (f" ({entry['xfail']}): {got['msg'][:300]}"
                                                            if want == "xfail" else ""))
    for line in report:
        print(line)
    for problem in problems:
        print("PROBLEM " + problem, file=sys.stderr)
    known = sum(1 for line in report if "KNOWN FAILURE" in line)
    print(f"{len(report)} examples as expected ({known} known failures), {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
