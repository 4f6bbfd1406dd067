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
    byte. A missing file is created with the layout of NVIDIA's C(gridd.conf.template). A C(gridd.conf) that is a
    symbolic link to an existing file is edited at the link's target (the link stays); a link whose target does
    not exist is refused before anything changes.
  - Reads values the way NVIDIA's guides write them - C(Key=value), C(Key="value") - and leniently what they do not
    document (spaces around C(=), other letter cases of a key). A managed key set more than once keeps one line; a
    key this task does not manage that is set more than once gets a warning (NVIDIA does not document which line
    C(nvidia-gridd) uses). File values NVIDIA does not document - C(EnableUI=yes) or C(=1) (the template lists
    C(TRUE) or C(FALSE)), C(FeatureType=3), a comment after a value - count as invalid and are rewritten when the
    key is managed.
  - Installs a client configuration token of the NVIDIA License System (NLS) from O(token_content) or from a file on
    the controller (O(token_src)) into C(/etc/nvidia/ClientConfigToken) (or the folder of
    O(client_config_token_path)) with mode C(0744), as NVIDIA documents, and optionally removes other tokens. A
    symbolic link (or any file that is not a regular file) at the token's path, or a token folder that is a link,
    is refused before anything changes; the token is never written through a link.
  - Plans the whole run before the first write and writes in a safe order - the token folder and token first, then
    C(gridd.conf) (so that a token that cannot be written never leaves C(gridd.conf) naming a folder without it),
    then the restart, then the wait. Every file is replaced through a temporary file in its own folder and
    C(AnsibleModule.atomic_move) (owner, mode and SELinux context kept). Runs on the same host are serialised with
    an C(fcntl) lock (C(/run/lock/gpuops-sharing.vgpu_license.lock)) from the first read to the last write, so
    parallel runs never lose each other's edits. RV(operations) lists the plan, RV(done) what was carried out;
    a failure after a write reports C(changed=true) with RV(done).
  - Every value is checked before anything changes (host names and IP addresses, ports, C(FeatureType), booleans,
    ranges, no newlines, C(=), C(#) or quotes that could inject other keys); errors name the option and the value.
  - Restarts C(nvidia-gridd) only when the configuration or the token changed (C(systemctl restart nvidia-gridd)
    where systemd runs; where no service manager runs, the daemon named by its pid file
    C(/var/run/nvidia-gridd/nvidia-gridd.pid) is stopped with SIGTERM, as NVIDIA's driver container stops it, and
    C(nvidia-gridd) is started again; processes are never signalled by name), then (O(wait=true))
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
        daemon whose pid C(/var/run/nvidia-gridd/nvidia-gridd.pid) holds (SIGTERM; only when that process is alive
        and named C(nvidia-gridd)) and running C(nvidia-gridd), which puts itself in the background.
      - Without systemd, a running C(nvidia-gridd) that no pid file names (started by hand, or the pid file was
        removed) makes the module refuse before anything changes; it is not signalled by its name, which other
        processes (another container's daemon in a shared PID namespace) may have too.
      - Set V(false) where no service runs, for example while building an image.
    type: bool
    default: true
  wait:
    description:
      - Wait until every vGPU of the VM is licensed, and fail after O(timeout) seconds with the reason and the last
        C(nvidia-gridd) log lines.
      - Refused before anything changes when no GPU of the host supports vGPU software licensing.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the license (O(wait=true)); V(0) checks once.
    type: int
    default: 120
  state:
    description:
      - V(present) configures licensing as the other options say.
      - V(absent) removes what a V(present) run installed - the token O(token_name) from the token folder (with
        O(remove_other_tokens=true) every other C(.tok) file too) and the C(gridd.conf) keys listed in O(remove) -
        then restarts C(nvidia-gridd) (O(restart)) so that it reads the configuration without them; the VM is then
        unlicensed. It takes no values to set, leaves C(gridd.conf) itself, the token folder and the
        C(nvidia-gridd.service) of the driver in place, and does not wait (O(wait) does not apply).
    type: str
    choices: [present, absent]
    default: present
  enable:
    description:
      - Where systemd runs, also enable C(nvidia-gridd.service) (the unit the guest driver installs) and start it
        when it is not running, in the same run (one C(systemctl show) reads its state). The module refuses
        before anything changes when the unit is not installed or is masked.
      - Ignored where no service manager runs, and with O(state=absent).
    type: bool
    default: false
  pid_file:
    description:
      - The pid file of the running C(nvidia-gridd), read where no service manager runs to stop the daemon for a
        restart. The default is where NVIDIA's daemon writes it.
    type: path
    default: /var/run/nvidia-gridd/nvidia-gridd.pid
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

- name: Remove the token and the keys a present run set (the VM is then unlicensed)
  gpuops.sharing.vgpu_license:
    state: absent
    remove: [feature_type]
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
operations:
  description:
    - The whole plan, in order, one sentence per operation (what check mode would do). Every refusal is decided
      before the first of them runs.
  returned: always
  type: list
  elements: str
  sample: ["write the client configuration token /etc/nvidia/ClientConfigToken/client_configuration_token.tok (mode 0744)",
           "write /etc/nvidia/gridd.conf", "restart nvidia-gridd (systemctl restart nvidia-gridd)",
           "wait up to 120 s until the VM is licensed"]
done:
  description:
    - The operations carried out, in order (the wait writes nothing and is not listed). Empty in check mode.
    - On a failure, what had been done before it (the task then reports C(changed=true) when this is not empty);
      the next run continues from what exists then.
  returned: always
  type: list
  elements: str
  sample: ["write the client configuration token /etc/nvidia/ClientConfigToken/client_configuration_token.tok (mode 0744)",
           "write /etc/nvidia/gridd.conf"]
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpuops.sharing.plugins.module_utils import _gridd, _gridd_host, _host
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import HAS_PYNVML
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import run_module

EMPTY = {"changed": False, "path": None, "config": {}, "config_changes": [], "backup_file": None,
         "token": {"path": None, "present": False, "changed": False}, "tokens_removed": [], "restarted": False,
         "restart_required": False, "waited": 0.0, "license": _gridd.empty_license(), "operations": [], "done": []}


def argument_spec() -> dict:
    return {
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
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "enable": {"type": "bool", "default": False},
        "pid_file": {"type": "path", "default": _gridd_host.PIDFILE},
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), mutually_exclusive=[("token_content", "token_src")],
                           supports_check_mode=True)
    params = module.params
    empty = dict(EMPTY)
    empty["path"] = params["path"]
    if params["token_src"] is not None:
        module.fail_json(msg="token_src is read on the controller by the gpuops.sharing.vgpu_license action plugin; "
                             "call the module through Ansible (or give token_content)", **empty)
    if params["timeout"] < 0 or params["timeout"] > 3600:
        module.fail_json(msg=f"timeout={params['timeout']} is out of range: give 0 to 3600 seconds", **empty)
    try:
        desired, remove = _gridd.desired_from_params(params)
        request = {"path": params["path"], "desired": desired, "remove": remove,
                   "token_name": _gridd.validate_token_name(params["token_name"]),
                   "content": None if params["token_content"] is None
                   else _gridd.validate_token_content(params["token_content"]),
                   "remove_other_tokens": params["remove_other_tokens"], "backup": params["backup"],
                   "restart": params["restart"], "wait": params["wait"], "timeout": params["timeout"],
                   "state": params["state"], "enable": params["enable"], "pid_file": params["pid_file"]}
        _gridd.validate_state(params["state"], desired, request["content"])
    except _gridd.GriddError as exc:
        module.fail_json(msg=str(exc), **empty)

    run = _host.module_runner(module)
    nvidia_smi = module.get_bin_path("nvidia-smi")

    def read_license():
        if not HAS_PYNVML:
            return _gridd.empty_license(), "nvidia-ml-py (import pynvml) is not installed for the Python Ansible uses"
        return _gridd_host.read_license(run, nvidia_smi)

    binaries = {name: module.get_bin_path(name) for name in ("systemctl", "nvidia-gridd", "journalctl")}
    lock = None if module.check_mode else _gridd_host.Lock()
    host = _gridd_host.HostGridd(request, run, module.atomic_move, module.backup_local, binaries, read_license,
                                 lock=lock)
    try:
        run_module(module, host, empty)
    finally:
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    main()
