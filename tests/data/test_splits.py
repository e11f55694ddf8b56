"""split_items: whole units (patients, slides) in exactly one split, deterministic whatever the input order."""
import pytest

from data.splits import split_items


def test_split_items_is_complete_disjoint_and_order_free():
    items = [f"s{i:02d}" for i in range(10)]
    a = split_items(items, val_fraction=0.2, test_fraction=0.1, seed=3, unit="slide")
    assert a == split_items(list(reversed(items)), val_fraction=0.2, test_fraction=0.1, seed=3)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (7, 2, 1)
    assert sorted(a["train"] + a["val"] + a["test"]) == items
    assert all(a[k] == sorted(a[k]) for k in a)
    assert a != split_items(items, val_fraction=0.2, test_fraction=0.1, seed=4)
    tiny = split_items(items[:3], val_fraction=0.01, test_fraction=0.0, seed=0)
    assert len(tiny["val"]) == 1 and tiny["test"] == []  # a positive fraction gets at least one unit
    with pytest.raises(ValueError, match=r"3 slide\(s\) cannot be split"):
        split_items(items[:3], val_fraction=0.5, test_fraction=0.5, seed=0, unit="slide")
    with pytest.raises(ValueError, match="val_fraction must be in"):
        split_items(items, val_fraction=1.0, test_fraction=0.0, seed=0)
