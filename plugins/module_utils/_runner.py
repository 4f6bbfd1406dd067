# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""observe -> plan -> check -> apply -> verify, shared by every module. Private to this collection.

Every state-changing module of the collection runs the same five steps through :func:`run`:

1. **observe** the whole host (``host.observe()``).  A read that fails raises; it is never taken
   for "nothing there".
2. **plan** every GPU and file involved into a list of typed :class:`Op` (``host.plan(state)``).
   Nothing in the plan depends on an answer that only arrives while applying: where the driver
   cannot answer yet, NVIDIA's tables (``_catalogue``) do.
3. **check** the whole plan before the first write (``host.check(state, plan)`` returns every
   refusal: validity, capacity, busy devices, safety).  Check mode stops here, so its verdict is
   the real run's verdict by construction: there is no second code path.
4. **apply** the operations in order (``host.apply(op, state)``), recording each one in ``done``
   as it completes.  A failure after any write raises :class:`RunError` with ``changed=True``,
   ``done`` and what to do next.
5. **verify** by reading back (``host.verify(state, plan)`` returns problems).

The host object (one per concern, in ``_<concern>_host.py``) does the reading and writing; what
it plans comes from the pure ``_<concern>.py``.  No ansible imports here: the boot-time code on
managed hosts runs this file with the host's own python3.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Op:
    """One operation of a plan.

    ``kind``    what it does (``set_mig_mode``, ``create_gi``, ``write_file``, ``restart_unit``, ...)
    ``target``  what it acts on (``GPU 0``, ``/etc/nvidia/gridd.conf``, ``nvidia-mps@gpu0.service``)
    ``text``    the sentence reported in ``operations`` and ``done``
    ``data``    plain data the host's ``apply`` needs
    ``writes``  False for steps that change nothing by themselves (re-reading the host after a
                mode change); a plan of such steps alone is not a change
    ``always``  run even when an earlier operation failed (starting again the services stopped
                for the change), as the ``always:`` of an Ansible block
    """

    kind: str
    target: str
    text: str
    data: dict = field(default_factory=dict)
    writes: bool = True
    always: bool = False

    def __str__(self) -> str:
        return self.text


class RunError(Exception):
    """A run failed.

    ``done``     texts of the operations completed before the failure (empty: nothing changed)
    ``result``   return values the module reports beside ``msg`` (per-GPU state and so on)
    """

    def __init__(self, message: str, done: list[str] | None = None, result: dict | None = None,
                 operations: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.done = list(done or [])
        self.result = dict(result or {})
        self.operations = list(operations or [])

    @property
    def changed(self) -> bool:
        return bool(self.done)


class Refused(RunError):
    """The check refused the plan: nothing was changed."""


def _wrap(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc)


def run(host, check_mode: bool, log=None) -> dict:
    """Run the five steps for ``host``; returns the module's result.

    ``host`` provides ``errors`` (the exception types its reads and writes raise, each with a
    message for the user), ``observe()``, ``plan(state)``, ``check(state, plan)``,
    ``apply(op, state)``, ``verify(state, plan)`` and ``result(state, plan, check_mode)``.
    ``apply`` may return the sentence to record for the operation (with what only the driver's
    answer tells, such as a new instance's id), or False when the step turned out to need no
    write (a conditional reset the driver made unnecessary); anything else records ``op.text``.
    The result always has ``changed``, ``operations`` (the plan, as sentences) and ``done``
    (what was carried out; empty in check mode).  ``log`` receives each completed operation
    (the boot units write them to the journal).
    """
    errors = (RunError,) + (tuple(getattr(host, "errors", ())) or (Exception,))
    log = log or (lambda text: None)
    try:
        state = host.observe()
        plan = list(host.plan(state))
        problems = list(host.check(state, plan))
    except RunError:
        raise
    except errors as exc:
        raise Refused(_wrap(exc)) from None
    texts = [op.text for op in plan]
    if problems:
        raise Refused("; ".join(problems), operations=texts)
    done: list[str] = []
    if not check_mode:
        failure = None
        for op in plan:
            if failure is not None and not op.always:
                continue
            try:
                outcome = host.apply(op, state)
            except errors as exc:
                if isinstance(exc, RunError):
                    done.extend(exc.done)
                if failure is not None:
                    failure = (f"{failure[0]}; then '{op.text}' failed too: {_wrap(exc)}", failure[1])
                else:
                    failure = (_wrap(exc), getattr(exc, "result", {}))
                continue
            if op.writes and outcome is not False:
                text = outcome if isinstance(outcome, str) else op.text
                done.append(text)
                log(text)
        if failure is not None:
            raise RunError(_next_step(failure[0], done), done, failure[1], texts)
        try:
            problems = list(host.verify(state, plan))
        except errors as exc:
            problems = [f"reading the host back failed: {_wrap(exc)}"]
        if problems:
            raise RunError(_next_step("; ".join(problems), done), done, operations=texts)
    result = host.result(state, plan, check_mode)
    result["changed"] = any(op.writes for op in plan)
    result["operations"] = texts
    result["done"] = done
    return result


def _next_step(message: str, done: list[str]) -> str:
    if not done:
        return message
    return (f"{message}. Completed before the failure: {'; '.join(done)}. "
            "The next run continues from what exists now")


def run_module(module, host, empty: dict) -> None:
    """The Ansible end of :func:`run`: exit_json or fail_json with the same keys on every path.

    ``empty`` holds every return key with its empty value.  ``host.warnings`` (a list, optional)
    become task warnings; ``host.diff(result)`` (optional) gives ``before``/``after`` with --diff.
    """
    try:
        result = run(host, module.check_mode)
    except RunError as exc:
        _warn(module, host)
        failed = dict(empty)
        failed.update(exc.result)
        failed.update(changed=exc.changed, done=exc.done, operations=exc.operations)
        module.fail_json(msg=exc.message, **failed)
    _warn(module, host)
    out = dict(empty)
    out.update(result)
    if module._diff and hasattr(host, "diff"):
        out["diff"] = host.diff(out)
    module.exit_json(**out)


def _warn(module, host) -> None:
    for text in getattr(host, "warnings", []) or []:
        module.warn(text)
