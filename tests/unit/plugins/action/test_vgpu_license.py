"""The vgpu_license action plugin: async is passed through to the module, token_src is read here."""

from __future__ import annotations

from unittest import mock

import pytest
from ansible.playbook.task import Task
from ansible.template import Templar

from ansible_collections.gpuops.sharing.plugins.action.vgpu_license import ActionModule


def action(args: dict, async_val: int = 0, native_async: bool = False) -> ActionModule:
    task = Task()
    task.args = args
    task.async_val = async_val
    connection = mock.MagicMock(has_native_async=native_async)
    connection._shell.tmpdir = None
    plugin = ActionModule(task, connection, play_context=mock.MagicMock(), loader=mock.MagicMock(),
                          templar=Templar(loader=mock.MagicMock()), shared_loader_obj=None)
    plugin._execute_module = mock.MagicMock(return_value={"changed": False, "licensed": True})
    return plugin


@pytest.mark.parametrize(("async_val", "native", "wrapped"), [(120, False, True), (0, False, False), (120, True, False)])
def test_async_reaches_the_module(async_val, native, wrapped):
    plugin = action({"feature_type": 1}, async_val, native)
    result = plugin.run(task_vars={})
    assert result["licensed"] is True and "failed" not in result
    call = plugin._execute_module.call_args.kwargs
    assert call["module_name"] == "gpuops.sharing.vgpu_license" and call["wrap_async"] is wrapped
    assert call["module_args"] == {"feature_type": 1}


def test_token_src_and_token_content_together_are_refused():
    result = action({"token_src": "a.tok", "token_content": "x"}).run(task_vars={})
    assert result["failed"] and result["msg"] == "parameters are mutually exclusive: token_content|token_src"
