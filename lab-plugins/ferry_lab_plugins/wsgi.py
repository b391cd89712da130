"""WSGI entry point for any lab OpenStack API under gunicorn.

oslo.config parses sys.argv, which under gunicorn holds gunicorn's own options: reset it to the
service's config files (FERRY_LAB_CONFIG_FILES, ';'-separated) before importing the service's
WSGI module (FERRY_LAB_WSGI_MODULE, e.g. "cinder.wsgi.api"); FERRY_LAB_LOG_FILE names its log.
"""

import importlib
import os
import sys

_files = [f for f in os.environ.get("FERRY_LAB_CONFIG_FILES", "").split(";") if f]
sys.argv = [os.environ.get("FERRY_LAB_PROG", "ferry-lab-api")]
for _file in _files:
    sys.argv += ["--config-file", _file]
if os.environ.get("FERRY_LAB_LOG_FILE"):
    sys.argv += ["--log-file", os.environ["FERRY_LAB_LOG_FILE"]]

application = importlib.import_module(os.environ["FERRY_LAB_WSGI_MODULE"]).application
