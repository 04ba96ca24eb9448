"""`inspector serve`: the model as an HTTP classify API (FastAPI + uvicorn, the ``web`` extra).

``app`` holds the routes, ``batcher`` the dynamic batcher, ``classifier`` THE preprocessing and the line's
decision, ``uploads`` the checks on what clients send, ``http`` the uvicorn runner and token check.
Nothing here is imported by the line itself.
"""
