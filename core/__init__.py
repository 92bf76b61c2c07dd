"""The shared kernel every app may import: the error type, the API's and the admin's base pieces, the command-line
helpers, the interface an action came through, redaction, formatting, charts, picture caches, upload paths, the
queue quota, the platform's files through its storage (a local folder or a bucket) and a worker host's cache of
them, and writes that wait for a restarted database. It imports ``access`` (permission checks) and nothing else of
the project; no app or module here imports ``dumpsite`` (the project: settings, URLs, WSGI/ASGI)."""
