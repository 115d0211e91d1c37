"""Class names and templates of the 8 real CLIP tasks: counts, order, template shape."""

from __future__ import annotations

from string import Formatter

import pytest

from fusion_bench.tasks.clip_classification import available_tasks, get_task

COUNTS = {
    "sun397": 397,
    "stanford-cars": 196,
    "resisc45": 45,
    "eurosat": 10,
    "svhn": 10,
    "gtsrb": 43,
    "mnist": 10,
    "dtd": 47,
}


@pytest.mark.parametrize("name,count", COUNTS.items())
def test_class_counts(name, count):
    task = get_task(name)
    assert len(task.classnames) == count
    assert len(set(task.classnames)) == count, "class names must be distinct"
    assert all(c and c == c.strip() for c in task.classnames)


@pytest.mark.parametrize("name", COUNTS)
def test_templates_have_exactly_one_placeholder(name):
    task = get_task(name)
    assert task.templates
    for t in task.templates:
        fields = [f for _, f, _, _ in Formatter().parse(t) if f is not None]
        assert fields == [""], t
    assert task.prompts(task.classnames[0])[0] == task.templates[0].format(task.classnames[0])


def test_label_order_spot_checks():
    # label order of the HF datasets (alphabetical folders / official class ids)
    assert get_task("eurosat").classnames[:2] == ("annual crop land", "forest")
    assert get_task("eurosat").classnames[-1] == "lake or sea"
    assert get_task("gtsrb").classnames[14] == "stop"
    assert get_task("gtsrb").classnames[0] == "red and white circle 20 kph speed limit"
    assert get_task("stanford-cars").classnames[0] == "AM General Hummer SUV 2000"
    assert get_task("stanford-cars").classnames[-1] == "smart fortwo Convertible 2012"
    assert get_task("mnist").classnames == tuple(str(i) for i in range(10))
    assert get_task("svhn").classnames == tuple(str(i) for i in range(10))
    for name in ("sun397", "resisc45", "dtd"):
        names = list(get_task(name).classnames)
        assert names == sorted(names), f"{name} labels are in alphabetical order"


def test_registry_lists_the_real_tasks():
    assert set(COUNTS) <= set(available_tasks())
