"""``cascade serve``: an OpenAI-compatible gateway in front of cascade policies.

Any OpenAI client (any language) points its base URL at the gateway and names a policy as its
model, ``cascade/<policy name>``. Needs the ``serve`` extra (``pip install 'cascade-llm[serve]'``:
Starlette, uvicorn, prometheus-client).

- :mod:`.app`: the ASGI app (:class:`Gateway`), its routes and the streaming answer
- :mod:`.wire`: OpenAI's request and response shapes (the one owner of that conversion)
- :mod:`.errors`: OpenAI's error shape, and which status each cascade error gets
- :mod:`.keys`: API keys (hashed) -> tenants, the budget key of per-key caps
- :mod:`.models`: policy files -> served models
"""

from __future__ import annotations

from cascade.serve.app import MAX_BODY_BYTES, Gateway
from cascade.serve.keys import Keys

__all__ = ["MAX_BODY_BYTES", "Gateway", "Keys"]
