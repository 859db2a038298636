"""``docpipe serve``: the web UI and REST API (needs the ``ui`` extra: ``pip install 'docpipe-idp[ui]'``).

:func:`create_app` builds the FastAPI application; :mod:`~docpipe.server.data`
reads what the pages and the API show, :mod:`~docpipe.server.actions` starts,
retries and resumes runs through :mod:`~docpipe.server.jobs`, and
:mod:`~docpipe.server.security` holds the token and request rules.
"""

from __future__ import annotations

from docpipe.server.app import create_app

__all__ = ["create_app"]
