import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm_platform.settings")

application = get_wsgi_application()

# What loading Django left (modules, models, URL patterns, serializers: hundreds of thousands of
# objects that live as long as the process) moves out of the collector's sight. A full collection
# otherwise walks all of it, ~80 ms, every few allocation-heavy requests (a 1,000-event batch
# makes tens of thousands of objects); now it walks only what requests made.
gc.freeze()
