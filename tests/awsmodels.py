"""One botocore model loader for the whole test process.

botocore parses its service models (JSON, the endpoint rules alone are ~1 MB) once per
``Session``. dsqlops builds one session per CLI invocation, which is right for the CLI, but the
tests invoke the CLI hundreds of times in one process and spent most of their time re-parsing the
same read-only files. Sharing the loader keeps every client real and the models parsed once.
"""

from __future__ import annotations

import functools

import botocore.loaders
import botocore.session

botocore.session.create_loader = functools.lru_cache(maxsize=None)(botocore.loaders.create_loader)
