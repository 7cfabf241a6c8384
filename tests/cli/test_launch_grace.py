"""`ecotui launch --grace SECONDS`: the cluster's termination grace, and a value out
of range refused with the flag's name."""

from __future__ import annotations

from test_commands import launch_args


def test_launch_grace_sets_the_cluster_grace(run):
    c = run.json(*launch_args("graceful", "--grace", "45"))
    assert c["termination_grace_seconds"] == 45
    assert run.json("show", "graceful")["termination_grace_seconds"] == 45
    code, out, _ = run("show", "graceful")
    assert code == 0 and "grace        45 s after SIGTERM" in out


def test_a_grace_out_of_range_names_the_flag(run):
    code, out, err = run(*launch_args("toolong", "--grace", "3601"))
    assert code == 1 and out == ""
    assert "--grace" in err
    assert run.json("ls")["clusters"] == []
