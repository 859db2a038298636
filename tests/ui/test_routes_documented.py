"""Every API route is in docs/ui.md's API table (the hooks' meta-test, extended to routes)."""

from __future__ import annotations

import re

from support import ROOT

from docpipe.server import create_app


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_api_route_is_documented(tmp_path):
    app = create_app(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "data", "t0ken")
    routes = {(method, _shape(path)) for path, ops in app.openapi()["paths"].items() if path.startswith("/api/")
              for method in (m.upper() for m in ops)}
    assert len(routes) >= 15
    docs = (ROOT / "docs" / "ui.md").read_text(encoding="utf-8")
    documented = {(m, _shape(p)) for m, p in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/api/[^`?\s]*)", docs)}
    assert routes - documented == set(), "routes missing from docs/ui.md's API table"
    assert documented - routes == set(), "docs/ui.md documents routes the server does not have"
