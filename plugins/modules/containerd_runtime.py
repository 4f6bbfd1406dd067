#!/usr/bin/python
# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: containerd_runtime
short_description: Configure containerd's NVIDIA runtime and CDI in config.toml, keeping the admin's settings
version_added: 0.1.0
description:
  - Sets what C(nvidia-ctk runtime configure --runtime=containerd) sets in containerd's C(config.toml), read from
    NVIDIA/nvidia-container-toolkit (C(pkg/config/engine/containerd), commit
    C(d34b3046758cb1a5db606b2a39519c731bbf9f56)), the runtime C(plugins.<cri>.containerd.runtimes.<runtime_name>)
    with C(options.BinaryName), optionally C(default_runtime_name), and CDI (C(enable_cdi), C(cdi_spec_dirs)).
  - The CRI plugin is C(io.containerd.grpc.v1.cri) in a C(version = 2) file (containerd 1.x) and
    C(io.containerd.cri.v1.runtime) in a C(version = 3) file (containerd 2.x). A file without C(version) is a
    version 1 file, which is refused (C(containerd config migrate) converts it).
  - A new runtime starts as a copy of the default runtime's settings (unless it is an C(nvidia*) runtime), else
    runc's, else crun's (so C(SystemdCgroup) carries over), as nvidia-ctk does.
  - "Unlike nvidia-ctk, which re-encodes the file, the module edits its text: comments, order and every setting it
    does not manage stay byte for byte. The result is parsed and compared with the original plus the managed
    changes before anything is written; a file that defines these settings with dotted keys or inline tables is
    refused with the changes to make by hand."
  - The file is written through a temporary file and an atomic rename, never through a symbolic link, keeping its
    mode. When it changed, and systemd runs, C(systemctl try-restart) restarts containerd if it runs.
  - "Where containerd is installed, its version is read (C(containerd --version)): a version 3 file is refused for
    containerd 1.x, and CDI settings on containerd older than 1.7.0, which has no CDI support and ignores them, get a
    warning."
  - Reads TOML with Python's C(tomllib) (3.11 and later) or C(tomli) on older managed hosts.
requirements:
  - Python 3.11 or later on the managed host (C(tomllib)), or C(tomli) (Debian/Ubuntu C(python3-tomli), RHEL 9
    C(python3-tomli)) on older ones.
extends_documentation_fragment:
  - gpuops.sharing._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff is the file before and after.
  idempotent:
    support: full
options:
  path:
    description: containerd's config file. A symbolic link there is refused, not followed.
    type: path
    default: /etc/containerd/config.toml
  state:
    description:
      - V(present) adds or updates the runtime and the CDI settings.
      - V(absent) removes the runtime and a C(default_runtime_name) naming it (as C(nvidia-ctk runtime configure)
        does when it unconfigures); the CDI settings stay, other runtimes may use CDI.
    type: str
    choices: [present, absent]
    default: present
  runtime_name:
    description: The runtime's name, what a Kubernetes C(RuntimeClass) names in C(handler).
    type: str
    default: nvidia
  binary_name:
    description: The runtime binary, C(options.BinaryName).
    type: path
    default: /usr/bin/nvidia-container-runtime
  set_as_default:
    description:
      - Make the runtime containerd's C(default_runtime_name), as C(--set-as-default) does. V(false) removes a
        C(default_runtime_name) that names it.
    type: bool
    default: false
  enable_cdi:
    description: Set C(enable_cdi = true) in the CRI plugin. V(false) leaves the setting as it is.
    type: bool
    default: true
  cdi_spec_dirs:
    description: The CRI plugin's C(cdi_spec_dirs); unset leaves it as it is (containerd's default is
      C(["/etc/cdi", "/var/run/cdi"])).
    type: list
    elements: str
  config_version:
    description: The config version written into a new or empty file; an existing file keeps its own.
    type: int
    choices: [2, 3]
    default: 2
  restart:
    description: Restart containerd (C(systemctl try-restart)) when the file changed and systemd runs.
    type: bool
    default: true
  service:
    description: containerd's systemd unit.
    type: str
    default: containerd.service
seealso:
  - name: NVIDIA Container Toolkit, configuring containerd
    description: What C(nvidia-ctk runtime configure --runtime=containerd) sets.
    link: https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html#configuring-containerd-for-kubernetes
  - name: containerd CRI config
    description: C(enable_cdi), C(cdi_spec_dirs) and the runtimes table.
    link: https://github.com/containerd/containerd/blob/main/docs/cri/config.md
  - module: gpuops.sharing.cdi_spec
author:
  - gpuops.sharing maintainers (@gpuops)
"""

EXAMPLES = r"""
- name: NVIDIA runtime and CDI in containerd's config, containerd restarted when it changed
  gpuops.sharing.containerd_runtime:
  register: runtime

- name: Show what containerd will run
  ansible.builtin.debug:
    msg: "{{ runtime.settings.runtime.options.BinaryName }}, CDI {{ runtime.settings.enable_cdi }}"

- name: NVIDIA runtime as containerd's default runtime, CDI specs from two folders
  gpuops.sharing.containerd_runtime:
    set_as_default: true
    cdi_spec_dirs: [/etc/cdi, /var/run/cdi]

- name: Remove the NVIDIA runtime again
  gpuops.sharing.containerd_runtime:
    state: absent
"""

RETURN = r"""
path:
  description: The config file.
  returned: always
  type: str
version:
  description: The file's config version (2 or 3), or the one a new file gets.
  returned: success
  type: int
plugin:
  description: The CRI plugin's table for that version.
  returned: success
  type: str
  sample: io.containerd.grpc.v1.cri
changes:
  description: The settings changed (or that would be), as sentences.
  returned: always
  type: list
  elements: str
settings:
  description: The managed settings after the run, C(runtime) (the runtime's table), C(default_runtime_name),
    C(enable_cdi) and C(cdi_spec_dirs).
  returned: always
  type: dict
  sample: {"runtime": {"runtime_type": "io.containerd.runc.v2",
                       "options": {"BinaryName": "/usr/bin/nvidia-container-runtime"}},
           "default_runtime_name": null, "enable_cdi": true, "cdi_spec_dirs": null}
restart_required:
  description: The file changed and containerd was not restarted (no systemd, or O(restart=false)).
  returned: always
  type: bool
containerd_version:
  description: The installed containerd's version (C(containerd --version)), V(null) where it is not installed.
  returned: always
  type: str
  sample: 1.7.24
operations:
  description: What was (or in check mode would be) done.
  returned: always
  type: list
  elements: str
done:
  description: The operations carried out (empty in check mode); after a failure, those completed before it.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.sharing.plugins.module_utils import _containerd, _containerd_host, _host
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import run_module


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": _containerd.DEFAULT_PATH},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "runtime_name": {"type": "str", "default": "nvidia"},
            "binary_name": {"type": "path", "default": _containerd.DEFAULT_BINARY},
            "set_as_default": {"type": "bool", "default": False},
            "enable_cdi": {"type": "bool", "default": True},
            "cdi_spec_dirs": {"type": "list", "elements": "str"},
            "config_version": {"type": "int", "choices": [2, 3], "default": 2},
            "restart": {"type": "bool", "default": True},
            "service": {"type": "str", "default": "containerd.service"},
        },
        supports_check_mode=True,
    )
    p = module.params
    empty = {"changed": False, "path": p["path"], "changes": [], "settings": {}, "restart_required": False,
             "containerd_version": None, "operations": [], "done": []}
    if not _containerd_host.HAS_TOML:
        module.fail_json(msg=missing_required_lib("tomli (Python older than 3.11 has no tomllib)"), **empty)
    try:
        _containerd.check_request(p["runtime_name"], p["binary_name"], p["cdi_spec_dirs"], p["config_version"])
        _containerd.check_unit(p["service"])
    except _containerd.ContainerdConfigError as exc:
        module.fail_json(msg=exc.message, **empty)
    host = _containerd_host.ContainerdHost(dict(p), module.atomic_move, _host.module_runner(module, timeout=120),
                                           module.get_bin_path("systemctl"), module.get_bin_path("containerd"))
    try:
        lock = _containerd_host.lock_folder(p["path"])      # one run at a time on this file
    except OSError as exc:
        module.fail_json(msg=getattr(exc, "message", None) or "cannot lock the folder of %s: %s" % (p["path"], exc),
                         **empty)
    try:
        run_module(module, host, empty)
    finally:
        if lock is not None:
            os.close(lock)


if __name__ == "__main__":
    main()
