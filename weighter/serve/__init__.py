"""``weighter serve``: a local web app on a store, to search, skim groups and listen.

Pages (plain HTML and JavaScript in ``static/``, no build step) and the JSON API behind them
(``create_app`` lists the endpoints; docs/serve.md gives their shapes). The app reads the
store only: it never writes to it, uploads included, and it sees what ``weighter index add``
commits on the next request. Audio is served by stored file id only, with HTTP range
requests (``weighter.serve.audio``).

Needs the ``serve`` extra: ``pip install 'weighter[serve]'`` (FastAPI, uvicorn,
python-multipart).
"""

from weighter.serve.app import create_app

__all__ = ["create_app"]
