"""The Celery app. Queues, serializer, acks_late and time limits are in settings (CELERY_*)."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm_platform.settings")

app = Celery("crm_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Carry the request id from whoever queued a task into the task's log lines.
@signals.before_task_publish.connect
def _add_request_id(headers=None, **kwargs):
    from crm_platform.logging import request_id_var

    if headers is not None and "request_id" not in headers:
        headers["request_id"] = request_id_var.get()


# As in wsgi.py: once the worker has loaded everything, full collections stop walking it.
@signals.worker_ready.connect
@signals.worker_process_init.connect
def _freeze_startup_heap(**kwargs):
    import gc

    from django.apps import apps

    if apps.ready:
        gc.collect()
        gc.freeze()


@signals.task_prerun.connect
def _set_request_id(task=None, **kwargs):
    from crm_platform.logging import request_id_var

    request_id = getattr(task.request, "request_id", None) or (task.request.headers or {}).get("request_id")
    request_id_var.set(request_id or task.request.id or "-")
