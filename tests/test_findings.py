import copy

from vitlib import findings


def results(machine_cpu="cpu A", **values):
    numbers = {
        "course_report.test_accuracy": {"value": 0.73, "spread": None, "kind": "constant", "label": ""},
        "final.test_accuracy": {"value": 0.9000, "spread": 0.01, "kind": "fraction", "label": ""},
        "final.parameters": {"value": 2000, "spread": None, "kind": "count", "label": ""},
        "selection.best": {"value": "depth=3", "spread": None, "kind": "text", "label": ""},
        "runner_up.mcnemar_p": {"value": 0.01, "spread": None, "kind": "p", "label": ""},
    }
    for name, value in values.items():
        numbers[name.replace("__", ".")]["value"] = value
    return {"numbers": numbers, "built": {"machine": {"cpu": machine_cpu, "torch": "2.14.1"}}}


def verdicts(committed, rebuilt):
    table, same = findings.compare(committed, rebuilt)
    return dict(zip(table["number"], table["ok"])), same


def test_on_the_same_machine_every_number_must_be_identical():
    ok, same = verdicts(results(), results(final__test_accuracy=0.9001))
    assert same and not ok["final.test_accuracy"] and ok["final.parameters"]
    ok, _ = verdicts(results(), results(selection__best="depth=2"))
    assert not ok["selection.best"]
    ok, _ = verdicts(results(), copy.deepcopy(results()))
    assert all(ok.values())


def test_elsewhere_a_number_may_move_within_twice_its_stated_spread():
    ok, same = verdicts(results(), results("cpu B", final__test_accuracy=0.919, runner_up__mcnemar_p=0.5))
    assert not same and ok["final.test_accuracy"] and ok["runner_up.mcnemar_p"]  # p has no stated spread
    ok, _ = verdicts(results(), results("cpu B", final__test_accuracy=0.879))
    assert not ok["final.test_accuracy"]  # moved by 2.1 spreads
    ok, _ = verdicts(results(), results("cpu B", final__parameters=2001))
    assert not ok["final.parameters"]  # counts never move


def test_a_number_missing_from_the_rebuild_fails():
    rebuilt = results()
    del rebuilt["numbers"]["final.test_accuracy"]
    ok, _ = verdicts(results(), rebuilt)
    assert not ok["final.test_accuracy"]
