"""Only the optional C extension lives here; everything else is in pyproject.toml.

``dsqlops.sandbox._fastrelay`` is the sandbox front's per-session data path (TLS, socket I/O and
PostgreSQL framing in C; see dsqlops/sandbox/native.py). It is optional: without a C compiler or
OpenSSL's headers the build skips it and the front uses its pure-Python relay.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux") or sys.platform == "darwin":
    ext_modules.append(Extension(
        "dsqlops.sandbox._fastrelay",
        ["dsqlops/sandbox/_fastrelay.c"],
        libraries=["ssl", "crypto"],
        extra_compile_args=["-O2"],
        optional=True,
    ))

setup(ext_modules=ext_modules)
