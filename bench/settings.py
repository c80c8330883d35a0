"""Settings for benchmarks: the product's settings, plus the ceiling routes, minus the access log.

One log line per request written to a pipe would cost the server more than some of the views
being measured, so the access logger is quiet here (errors still show).
"""

import copy

from crm_platform.settings import *  # noqa: F403
from crm_platform.settings import LOGGING as _PRODUCT_LOGGING

ROOT_URLCONF = "bench.urls"

LOGGING = copy.deepcopy(_PRODUCT_LOGGING)
LOGGING["loggers"]["crm_platform.request"] = {"level": "WARNING"}

# Benchmarks run the server and the workers as production does: DEBUG off. With DEBUG on, Django
# composes and keeps the text of every SQL statement, parameters merged in (the inbox applier's
# and the batch endpoint's statements carry documents of hundreds of KB); production never does.
# The rest of development mode stays: its derived secrets, plain HTTP on loopback.
DEBUG = False
