#!/usr/bin/python
# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vgpu_license
short_description: License an NVIDIA vGPU guest - gridd.conf, client configuration token, nvidia-gridd
version_added: 0.1.0
description:
  - In a VM with an NVIDIA vGPU, the guest driver restricts features until C(nvidia-gridd) obtains a license. This
    module configures the client the way NVIDIA's licensing guides describe and waits until the VM is licensed.
  - Edits C(/etc/nvidia/gridd.conf) in place. Only the keys given as options (or listed in O(remove)) are
    touched; comments, blank lines, order, line endings (CRLF included), a UTF-8 byte order mark, bytes that are
    not UTF-8, a missing final newline and every other key (C(IgnoreSP) of cloud images, for example) stay byte for
    byte. A missing file is created with the layout of NVIDIA's C(gridd.conf.template); a symbolic link is followed.
  - Reads values the way NVIDIA's guides write them - C(Key=value), C(Key="value") - and leniently what they do not
    document (spaces around C(=), other letter cases of a key). A managed key set more than once keeps one line; a
    key this task does not manage that is set more than once gets a warning (NVIDIA does not document which line
    C(nvidia-gridd) uses). File values NVIDIA does not document - C(EnableUI=yes) or C(=1) (the template lists
    C(TRUE) or C(FALSE)), C(FeatureType=3), a comment after a value - count as invalid and are rewritten when the
    key is managed.
  - Installs a client configuration token of the NVIDIA License System (NLS) from O(token_content) or from a file on
    the controller (O(token_src)) into C(/etc/nvidia/ClientConfigToken) (or the folder of
    O(client_config_token_path)) with mode C(0744), as NVIDIA documents, and optionally removes other tokens.
  - Every value is checked before anything changes (host names and IP addresses, ports, C(FeatureType), booleans,
    ranges, no newlines, C(=), C(#) or quotes that could inject other keys); errors name the option and the value.
  - Restarts C(nvidia-gridd) only when the configuration or the token changed (C(systemctl restart nvidia-gridd)
    where systemd runs; where no service manager runs, the running C(nvidia-gridd) is stopped with SIGTERM and
    started again, as NVIDIA's pre-systemd init job did), then (O(wait=true))
    reads the license state through NVML (C(nvmlDeviceGetGridLicensableFeatures_v4); C(nvidia-smi -q) only on
    drivers without that call) until the VM is licensed or O(timeout) passes. On a timeout it fails with the reason
    and the last C(nvidia-gridd) log lines (C(journalctl -u nvidia-gridd), else C(/var/log/messages) or
    C(/var/log/syslog)).
  - With O(restart=false) and O(wait=false) it only writes files, for image builds without a running service.
extends_documentation_fragment:
  - gpuops.sharing._attributes
  - gpuops.sharing._attributes.NVML
attributes:
  check_mode:
    support: full
    details:
      - Writes nothing, restarts nothing, does not wait; reports the changes it would make.
  diff_mode:
    support: full
    details:
      - The managed C(gridd.conf) keys before and after, and each token file as present or absent with its size and
        mode. Token content is never shown.
  idempotent:
    support: full
options:
  path:
    description: The C(nvidia-gridd) configuration file.
    type: path
    default: /etc/nvidia/gridd.conf
  server_address:
    description:
      - C(ServerAddress), the legacy license server (host name or IP address, no scheme or port).
      - NLS clients take the server from the client configuration token; leave it unset for NLS.
    type: str
  server_port:
    description: C(ServerPort) of the legacy license server, 1 to 65535 (NVIDIA's default is 7070).
    type: int
  backup_server_address:
    description: C(BackupServerAddress), a second legacy license server.
    type: str
  backup_server_port:
    description: C(BackupServerPort), 1 to 65535 (default 7070).
    type: int
  feature_type:
    description:
      - C(FeatureType), the licensed feature, as a number or a name.
      - V(1) or V(vgpu) - NVIDIA vGPU; the driver licenses the product of the vGPU type (Q-series RTX Virtual
        Workstation, B-series Virtual PC, A-series Virtual Applications, C-series Virtual Compute Server). This is
        what NVIDIA documents for a vGPU guest.
      - V(2), V(rtx_vws) or V(vws) - NVIDIA RTX Virtual Workstation, for a physical GPU (pass-through, bare metal).
      - V(4) or V(vcs) - NVIDIA Virtual Compute Server, for a physical GPU in pass-through.
      - V(0), V(unlicensed) or V(vapps) - the template's "unlicensed state". On a vGPU no license is requested; on a
        physical GPU NVIDIA's License System guide lists 0 as NVIDIA Virtual Applications, which is licensed by the
        EULA only (no lease).
      - NVIDIA reserves every other value ("All other values reserved"). The module warns when V(2) or V(4) is set
        on a vGPU, V(1) on a host without one, or V(0) on a vGPU.
    type: raw
  enable_ui:
    description: C(EnableUI), whether nvidia-settings shows the licensing page; written C(TRUE) or C(FALSE), the only
      values NVIDIA's template lists.
    type: bool
  license_interval:
    description: C(LicenseInterval), license borrow period of a legacy license server in minutes (10 to 10080).
    type: int
  linger_interval:
    description: C(LingerInterval), license linger period of a legacy license server in minutes (0 to 10080).
    type: int
  client_config_token_path:
    description:
      - C(ClientConfigTokenPath), the folder of the client configuration token when it is not
        C(/etc/nvidia/ClientConfigToken). The token of this run is installed there.
    type: str
  proxy_server_address:
    description: C(ProxyServerAddress), a proxy between the VM and the license service.
    type: str
  proxy_server_port:
    description: C(ProxyServerPort), 1 to 65535.
    type: int
  proxy_user_name:
    description: C(ProxyUserName) for an authenticating proxy, for example V(DOMAIN\\user).
    type: str
  proxy_credentials_file_path:
    description: C(ProxyCredentialsFilePath), the file with the proxy password as NVIDIA's tool encrypts it.
    type: str
  remove:
    description:
      - Options whose key is taken out of C(gridd.conf) (their active C(Key=value) lines are deleted; comments stay).
        A key set to an empty value (C(ServerAddress=), as in NVIDIA's template) counts as unset and is left alone.
      - An option cannot be set and removed in the same task.
    type: list
    elements: str
    choices: [server_address, server_port, backup_server_address, backup_server_port, feature_type, enable_ui,
              license_interval, linger_interval, client_config_token_path, proxy_server_address, proxy_server_port,
              proxy_user_name, proxy_credentials_file_path]
    default: []
  token_content:
    description:
      - The content of the client configuration token (C(.tok)) downloaded from the NVIDIA Licensing Portal or a DLS
        instance. Never logged and never shown in diffs.
    type: str
  token_src:
    description:
      - A client configuration token file on the controller (searched in the role's or playbook's C(files/) like
        M(ansible.builtin.copy)'s C(src)); the action plugin reads it and passes its content as O(token_content).
        Vault-encrypted files are decrypted.
    type: path
  token_name:
    description:
      - File name of the token in the token folder - letters, digits, C(.), C(_) and C(-), ending in C(.tok) (lower
        case, the extension NVIDIA's tokens have), no path, no C(..), not starting with C(.).
      - The default is the name NVIDIA's GPU Operator expects.
    type: str
    default: client_configuration_token.tok
  remove_other_tokens:
    description:
      - Remove every other C(.tok) file from the token folder, so that the daemon cannot pick an old token.
        Without a token in this task, every token except O(token_name) is removed.
    type: bool
    default: false
  backup:
    description: Keep a timestamped copy of C(gridd.conf) before changing it.
    type: bool
    default: false
  restart:
    description:
      - Restart C(nvidia-gridd) when the configuration or the token changed - with C(systemctl restart nvidia-gridd)
        when systemd is the running service manager (C(/run/systemd/system) exists), otherwise by stopping the
        running C(nvidia-gridd) processes (SIGTERM) and running C(nvidia-gridd), which puts itself in the background.
      - Set V(false) where no service runs, for example while building an image.
    type: bool
    default: true
  wait:
    description:
      - Wait until every vGPU of the VM is licensed, and fail after O(timeout) seconds with the reason and the last
        C(nvidia-gridd) log lines.
      - Also fails at once when no GPU of the host supports vGPU software licensing.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the license (O(wait=true)); V(0) checks once.
    type: int
    default: 120
notes:
  - Licensing fails when the VM clock is far off; keep it synchronised (the P(gpuops.sharing.vgpu_guest#role) role
    checks it).
  - Run it as root (C(become=true)).
seealso:
  - name: Virtual GPU Client Licensing User Guide
    description: Licensed products, FeatureType, token placement and license status.
    link: https://docs.nvidia.com/vgpu/latest/grid-licensing-user-guide/
  - name: NVIDIA License System User Guide
    description: Client configuration tokens, CLS and DLS instances, proxies.
    link: https://docs.nvidia.com/license-system/latest/
  - name: gpuops.sharing.vgpu_guest
    description: The role that checks the VM, applies this module and asserts the license.
    link: https://github.com/gpuops/sharing/tree/main/roles/vgpu_guest
author:
  - gpuops.sharing maintainers (@gpuops)
"""

EXAMPLES = r"""
- name: License a vGPU VM with an NLS client configuration token
  gpuops.sharing.vgpu_license:
    token_src: client_configuration_token.tok
    feature_type: vgpu
    remove_other_tokens: true
  become: true
  register: license

- name: Show the licensed product and when the lease ends
  ansible.builtin.debug:
    msg: "{{ license.license.feature }} until {{ license.license.expiry }}"

- name: Legacy license server with a backup
  gpuops.sharing.vgpu_license:
    server_address: license1.example.com
    server_port: 7070
    backup_server_address: license2.example.com
    feature_type: 1
  become: true

- name: Write the configuration into an image (no service running)
  gpuops.sharing.vgpu_license:
    token_content: "{{ vault_nls_token }}"
    feature_type: 1
    restart: false
    wait: false
  become: true

- name: Move from the legacy server to NLS
  gpuops.sharing.vgpu_license:
    token_content: "{{ vault_nls_token }}"
    remove: [server_address, server_port, backup_server_address, backup_server_port]
  become: true
"""

RETURN = r"""
path:
  description: The gridd.conf file.
  returned: always
  type: str
  sample: /etc/nvidia/gridd.conf
config:
  description: The managed keys the file sets after the run (planned in check mode), by option name.
  returned: always
  type: dict
  sample: {"feature_type": 1, "enable_ui": false}
config_changes:
  description: The changes to gridd.conf, one line each.
  returned: always
  type: list
  elements: str
  sample: ["FeatureType: 0 -> 1", "ServerAddress: license.example.com -> (unset)"]
backup_file:
  description: The backup of gridd.conf; V(null) when none was made.
  returned: always
  type: str
token:
  description: The token file of O(token_name) with C(path), C(present) and C(changed) (content, mode or removal).
  returned: always
  type: dict
  sample: {"path": "/etc/nvidia/ClientConfigToken/client_configuration_token.tok", "present": true, "changed": true}
tokens_removed:
  description: Other token files removed (O(remove_other_tokens=true)).
  returned: always
  type: list
  elements: str
restarted:
  description: Whether nvidia-gridd was restarted.
  returned: always
  type: bool
restart_required:
  description:
    - V(true) when the configuration or the token changed and nvidia-gridd has not been restarted yet (O(restart=false),
      or check mode); it reads them only when it starts.
  returned: always
  type: bool
waited:
  description: Seconds spent waiting for the license.
  returned: always
  type: float
license:
  description:
    - The license state after the run, as NVML (or C(nvidia-smi -q)) reports it. Read once when O(wait=false) or in
      check mode; C(state) is V(unknown) when it could not be read.
  returned: always
  type: dict
  contains:
    state:
      description: V(licensed) (every licensable GPU is), V(unlicensed) or V(unknown).
      type: str
      sample: licensed
    feature:
      description: Licensed product name as the driver reports it.
      type: str
      sample: NVIDIA Virtual Compute Server
    feature_code:
      description: NVML C(nvmlGridLicenseFeatureCode_t) (0 unknown, 1 vGPU, 2 NVIDIA RTX, 3 gaming, 4 compute).
      type: int
      sample: 4
    expiry:
      description: End of the lease in UTC (ISO 8601), V(permanent), or V(null).
      type: str
      sample: "2025-04-22T11:18:43Z"
    source:
      description: V(nvml), V(nvml+nvidia-smi), or V(null) when nothing could be read.
      type: str
    gpus:
      description: Per GPU C(index), C(name), C(uuid), C(virtualization_mode) (V(vgpu), V(passthrough), V(none), ...),
        C(license_supported), C(licensed), C(feature), C(feature_code), C(expiry).
      type: list
      elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpuops.sharing.plugins.module_utils import _gridd, _gridd_host
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import HAS_PYNVML


def change_text(option, before, after) -> str:
    if option is None:
        return "layout: file created or duplicate lines removed"

    def show(value):
        if value is None:
            return "(unset)"
        if isinstance(value, tuple):
            return f"{_gridd.shown(value[1])} (invalid)"
        return _gridd.shown(_gridd.render_value(option, value))

    return f"{_gridd.KEYS[option][0]}: {show(before)} -> {show(after)}"


def argument_spec() -> dict:
    spec = {
        "path": {"type": "path", "default": _gridd.DEFAULT_PATH},
        "server_address": {"type": "str"},
        "server_port": {"type": "int"},
        "backup_server_address": {"type": "str"},
        "backup_server_port": {"type": "int"},
        "feature_type": {"type": "raw"},
        "enable_ui": {"type": "bool"},
        "license_interval": {"type": "int"},
        "linger_interval": {"type": "int"},
        "client_config_token_path": {"type": "str", "no_log": False},   # a folder, not a secret
        "proxy_server_address": {"type": "str"},
        "proxy_server_port": {"type": "int"},
        "proxy_user_name": {"type": "str"},
        "proxy_credentials_file_path": {"type": "str"},
        "remove": {"type": "list", "elements": "str", "choices": list(_gridd.KEYS), "default": []},
        "token_content": {"type": "str", "no_log": True},
        "token_src": {"type": "path"},
        "token_name": {"type": "str", "default": _gridd.DEFAULT_TOKEN_NAME},
        "remove_other_tokens": {"type": "bool", "default": False},
        "backup": {"type": "bool", "default": False},
        "restart": {"type": "bool", "default": True},
        "wait": {"type": "bool", "default": True},
        "timeout": {"type": "int", "default": 120},
    }
    return spec


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), mutually_exclusive=[("token_content", "token_src")],
                           supports_check_mode=True)
    params = module.params
    path = params["path"]
    result = {"changed": False, "path": path, "config": {}, "config_changes": [], "backup_file": None,
              "token": {"path": None, "present": False, "changed": False}, "tokens_removed": [],
              "restarted": False, "restart_required": False, "waited": 0.0, "license": _gridd.empty_license()}

    def run(argv):
        return module.run_command(argv, environ_update={"LC_ALL": "C", "LANG": "C"})

    nvidia_smi = module.get_bin_path("nvidia-smi")

    def read_license():
        if not HAS_PYNVML:
            return _gridd.empty_license(), "nvidia-ml-py (import pynvml) is not installed for the Python Ansible uses"
        return _gridd_host.read_license(run, nvidia_smi)

    if params["token_src"] is not None:
        module.fail_json(msg="token_src is read on the controller by the gpuops.sharing.vgpu_license action plugin; "
                             "call the module through Ansible (or give token_content)", **result)
    if params["timeout"] < 0 or params["timeout"] > 3600:
        module.fail_json(msg=f"timeout={params['timeout']} is out of range: give 0 to 3600 seconds", **result)
    try:
        desired, remove = _gridd.desired_from_params(params)
        token_name = _gridd.validate_token_name(params["token_name"])
        content = None if params["token_content"] is None else _gridd.validate_token_content(params["token_content"])
        text = _gridd_host.read_text(path)
        new_text, changes = _gridd.plan(text, desired, remove)
        current = _gridd.current_values(_gridd.parse(text or ""))
        tdir = _gridd.token_dir(desired, remove, current)
        tplan = _gridd_host.plan_tokens(tdir, token_name, content, params["remove_other_tokens"])
    except _gridd.GriddError as exc:
        module.fail_json(msg=str(exc), **result)

    token_path = os.path.join(tdir, token_name)
    result["config"] = _gridd.config_view(new_text)
    result["config_changes"] = [change_text(*change) for change in changes]
    result["tokens_removed"] = [os.path.join(tdir, name) for name in tplan["remove"]]
    result["token"] = {"path": token_path, "changed": bool(tplan["write"] or tplan["chmod"]),
                       "present": content is not None or os.path.exists(token_path)}
    changed = bool(changes) or _gridd_host.token_changed(tplan)
    result["changed"] = changed
    result["restart_required"] = changed
    if module._diff:
        after = _gridd.current_values(_gridd.parse(new_text))
        absent = [] if text is not None else [f"{path}: absent"]
        result["diff"] = {
            "before_header": path, "after_header": path,
            "before": "\n".join(absent + _gridd.diff_lines(current) + _gridd_host.token_diff(tplan, "before")) + "\n",
            "after": "\n".join(_gridd.diff_lines(after) + _gridd_host.token_diff(tplan, "after")) + "\n",
        }

    still = {key.lower() for key in _gridd.repeated_keys(new_text)}   # after this run's edits
    for key, where in _gridd.repeated_keys(text).items():
        if key.lower() not in still:
            continue
        module.warn(f"{path} sets {key} on more than one line (" + ", ".join(
            f"line {number}: {_gridd.shown(value)!r}" for number, value in where) + "); NVIDIA does not document "
            "which one nvidia-gridd uses (this module reads the first). Remove the extra lines, or manage the key "
            "with this module, which keeps one")

    before_license, _error = read_license()
    if "feature_type" in desired:
        modes = [g.get("virtualization_mode") for g in before_license["gpus"] if g.get("virtualization_mode")]
        for warning in _gridd.feature_type_warnings(desired["feature_type"], modes):
            module.warn(warning)
    result["license"] = before_license
    if module.check_mode:
        module.exit_json(**result)

    done = []
    try:
        if changes:
            if params["backup"] and text is not None:
                result["backup_file"] = module.backup_local(path)
            os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
            _gridd_host.write_atomic(path, _gridd_host.encode_text(new_text))
            done.append(f"wrote {path}")
        if _gridd_host.token_changed(tplan):
            _gridd_host.apply_tokens(tplan, content)
            done.append("updated the client configuration token folder " + tdir)
    except OSError as exc:
        module.fail_json(msg=f"cannot write {exc.filename or path}: {exc.strerror} (run the task with become: true)",
                         done=done, **result)

    if changed and params["restart"]:
        how, error = _gridd_host.restart(run, module.get_bin_path("systemctl"), module.get_bin_path("nvidia-gridd"),
                                         _gridd_host.systemd_booted())
        if error:
            log = _gridd_host.gridd_log(run, module.get_bin_path("journalctl"))
            module.fail_json(msg=error + _log_text(log), done=done, **result)
        result["restarted"] = True
        result["restart_required"] = False
        done.append(f"restarted nvidia-gridd ({how})")

    if not params["wait"]:
        result["license"], _error = read_license()
        module.exit_json(**result)
    license_result, error, waited = _gridd_host.wait_for_license(read_license, params["timeout"])
    result["license"] = license_result
    result["waited"] = waited
    if error is None and license_result["state"] == "licensed":
        module.exit_json(**result)
    log = _gridd_host.gridd_log(run, module.get_bin_path("journalctl"))
    if error is not None:
        msg = f"cannot read the license state: {error}"
    elif license_result["state"] == "unknown":
        msg = ("no GPU of this host supports vGPU software licensing: "
               + _gridd.unlicensed_reason(license_result))
    else:
        msg = (f"nvidia-gridd did not license this VM within {params['timeout']} s: "
               f"{_gridd.unlicensed_reason(license_result)}. Check that the license server named in the client "
               f"configuration token (or ServerAddress) is reachable from the VM, that the token is current, and "
               f"that the clock is synchronised (timedatectl)")
    module.fail_json(msg=msg + _log_text(log), done=done, **result)


def _log_text(lines) -> str:
    if not lines:
        return ". No nvidia-gridd log lines were found (journalctl -u nvidia-gridd, /var/log/messages)."
    return ". Last nvidia-gridd log lines:\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
