import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm_platform.settings")

application = get_wsgi_application()

# What loading Django leaves (modules, models, URL patterns, views, serializers: hundreds of
# thousands of objects that live as long as the process) moves out of the collector's sight. A
# full collection otherwise walks all of it, ~80 ms, every few allocation-heavy requests (a
# 1,000-event batch makes tens of thousands of objects); now it walks only what requests made.
# The URLconf (and the views and serializers it imports) would otherwise load on the first
# request, after the freeze; the garbage of loading is collected first, not frozen for good.
get_resolver().url_patterns  # noqa: B018 - imported for its side effect
gc.collect()
gc.freeze()
