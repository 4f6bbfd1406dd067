# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of gpuops.sharing.vgpu_license: reads O(token_src) on the controller.

The token file is found like ansible.builtin.copy's ``src`` (the role's or playbook's
``files/``), decrypted when vault-encrypted, and handed to the module as ``token_content``,
which the module declares ``no_log``.  Everything else is the module's.
"""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _supports_async = True   # the licence wait (wait_timeout) may run in the background: async/poll

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        src = args.pop("token_src", None)
        if src is not None:
            if args.get("token_content") is not None:
                result.update(failed=True, msg="parameters are mutually exclusive: token_content|token_src")
                return result
            try:
                path = self._find_needle("files", src)
                real = self._loader.get_real_file(path, decrypt=True)
                try:
                    with open(real, "rb") as fh:
                        data = fh.read()
                finally:
                    self._loader.cleanup_tmp_file(real)
            except AnsibleError as exc:
                result.update(failed=True, msg=f"token_src={src}: {to_text(exc.message)}")
                return result
            try:
                args["token_content"] = data.decode("utf-8")
            except UnicodeDecodeError:
                result.update(failed=True, msg=f"token_src={src} is not a text file; a client configuration "
                                               f"token (.tok) is text")
                return result
        wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
        result.update(self._execute_module(module_name="gpuops.sharing.vgpu_license", module_args=args,
                                           task_vars=task_vars, wrap_async=wrap_async))
        return result
