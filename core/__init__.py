"""The shared kernel every app may import: the error type, the API's and the admin's base pieces, the command-line
helpers, the interface an action came through, redaction, formatting, charts, picture caches, upload paths, the
queue quota, and the platform's files through its storage (a local folder or a bucket). It imports ``access``
(permission checks) and nothing else of the project; no app or module here imports ``dumpsite`` (the project:
settings, URLs, WSGI/ASGI)."""
