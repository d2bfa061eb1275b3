"""Rendering untrusted Jinja2 templates: a sandbox, run in child processes bounded in time,
memory and output size, so that a hostile template can never hurt the server process.

    limits.py   the numbers (and their KEYPLANE_RENDER_* settings)
    sandbox.py  the Jinja2 sandbox and how its failures are described (runs in the child)
    worker.py   the child process: compile, render, stream, answer over a pipe
    pool.py     the parent side: a lazy pool of children, timeouts, kill and replace
"""
