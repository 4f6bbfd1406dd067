"""The shared runner as a decision table: what is applied, recorded and reported in each case."""

from __future__ import annotations

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op, Refused, RunError, run


class Boom(Exception):
    pass


class Host:
    """A host whose plan, check answers, failing operations and verify problems a test sets."""

    errors = (Boom,)

    def __init__(self, ops, problems=(), fail=(), verify=(), observe_error=False, skip=()):
        self.ops, self.problems, self.fail, self.problems_after = ops, list(problems), set(fail), list(verify)
        self.observe_error, self.skip = observe_error, set(skip)
        self.applied = []

    def observe(self):
        if self.observe_error:
            raise Boom("cannot read the GPU")
        return {}

    def plan(self, state):
        return self.ops

    def check(self, state, plan):
        return self.problems

    def apply(self, op, state):
        if op.kind in self.fail:
            raise Boom(f"{op.kind} failed")
        self.applied.append(op.kind)
        return False if op.kind in self.skip else None

    def verify(self, state, plan):
        return self.problems_after

    def result(self, state, plan, check_mode):
        return {"check_mode": check_mode}


def ops(*kinds, always=()):
    return [Op(k, "GPU 0", f"do {k}", always=k in always) for k in kinds]


def test_check_mode_stops_after_the_check():
    host = Host(ops("a", "b"))
    result = run(host, check_mode=True)
    assert host.applied == [] and result["changed"] and result["operations"] == ["do a", "do b"]
    assert result["done"] == []


def test_a_refusal_applies_nothing_in_either_mode():
    for check_mode in (True, False):
        host = Host(ops("a"), problems=["GPU 1 is busy", "GPU 2 is lost"])
        with pytest.raises(Refused) as err:
            run(host, check_mode)
        assert host.applied == [] and err.value.message == "GPU 1 is busy; GPU 2 is lost"
        assert not err.value.changed and err.value.done == []


def test_a_failed_read_is_a_refusal_not_an_empty_host():
    with pytest.raises(Refused, match="cannot read the GPU"):
        run(Host(ops("a"), observe_error=True), check_mode=False)


def test_a_failure_after_writes_reports_what_was_done():
    host = Host(ops("a", "b", "c"), fail={"b"})
    with pytest.raises(RunError) as err:
        run(host, check_mode=False)
    assert host.applied == ["a"] and err.value.done == ["do a"] and err.value.changed
    assert "b failed. Completed before the failure: do a" in err.value.message


def test_always_operations_run_after_a_failure():
    host = Host(ops("stop", "a", "b", "start", always={"start"}), fail={"a"})
    with pytest.raises(RunError) as err:
        run(host, check_mode=False)
    assert host.applied == ["stop", "start"] and err.value.done == ["do stop", "do start"]


def test_a_failing_always_operation_is_reported_beside_the_first_failure():
    host = Host(ops("a", "start", always={"start"}), fail={"a", "start"})
    with pytest.raises(RunError) as err:
        run(host, check_mode=False)
    assert not err.value.changed and "a failed; then 'do start' failed too: start failed" in err.value.message


def test_steps_that_turned_out_unneeded_are_not_recorded():
    host = Host(ops("a", "reset"), skip={"reset"})
    assert run(host, check_mode=False)["done"] == ["do a"]


def test_read_only_steps_alone_are_no_change():
    plan = [Op("reobserve", "GPU 0", "read again", writes=False)]
    result = run(Host(plan), check_mode=False)
    assert not result["changed"] and result["done"] == []


def test_verify_problems_fail_with_done():
    host = Host(ops("a"), verify=["layout differs"])
    with pytest.raises(RunError) as err:
        run(host, check_mode=False)
    assert err.value.done == ["do a"] and err.value.message.startswith("layout differs")


def test_empty_plan_is_no_change():
    result = run(Host([]), check_mode=False)
    assert not result["changed"] and result["operations"] == [] and result["done"] == []
