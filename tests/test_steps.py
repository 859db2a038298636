"""Step paths are built and parsed in one place (docpipe.steps)."""

from docpipe import steps


def test_paths_round_trip():
    cases = [("", "ocr", None), ("", "pages", 3), ("per_page/", "ocr", None),
             ("a/b/", "items", 0), ("", "x.y-z", 12)]
    for prefix, step, index in cases:
        path = steps.step_path(prefix, step, index)
        parsed = steps.parse(path)
        assert parsed.step == step and parsed.item == index
        assert steps.child_prefix_of(parsed.parents) == prefix
        assert str(parsed) == path


def test_parts():
    p = steps.parse("per_page/items[4]")
    assert p == steps.StepPath(("per_page",), "items", 4)
    assert p.top == "per_page" and p.nested and p.is_item
    assert steps.parse("ocr").top == "ocr" and not steps.parse("ocr").is_item
    assert steps.step_path("", "m", -1) == "m"  # a negative index: the whole step
    assert steps.child_prefix("a/", "b") == "a/b/"
    # not an item: brackets without digits stay part of the name
    assert steps.parse("odd[x]") == steps.StepPath((), "odd[x]", None)


def test_parent():
    assert steps.parse("ocr[3]").parent == "ocr"  # a map item belongs to its map step
    assert steps.parse("sub/x").parent == "sub"  # a nested step to its subflow step
    assert steps.parse("a/b/m[2]").parent == "a/b/m"
    assert steps.parse("a/b/c").parent == "a/b"
    assert steps.parse("ocr").parent is None
