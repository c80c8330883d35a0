from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from crm_platform.celery import app as celery_app
from crm_platform.schedules import SCHEDULE
from crm_platform.tasks import clear_expired_sessions
from tests.support import celery_worker


def test_celery_is_configured_for_safe_delivery():
    conf = celery_app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert {q.name for q in conf.task_queues} == {"default", "sync", "messaging", "ai", "bulk"}
    assert conf.task_time_limit and conf.task_soft_time_limit < conf.task_time_limit
    assert conf.worker_prefetch_multiplier == 1


def test_every_task_keeps_a_soft_limit_under_its_own_hard_one_and_the_broker_outwaits_them():
    """A task given its own hard limit but no soft one got the project's default soft limit
    (270 s): the nightly audit seal and verify, allowed an hour, would have been stopped after
    four and a half minutes once the chain grew. And Redis redelivers a message not acknowledged
    within its visibility timeout (3600 s, the longest hard limit): a long job could start twice."""
    conf = celery_app.conf
    celery_app.loader.import_default_modules()
    ours = [task for name, task in celery_app.tasks.items() if not name.startswith("celery.")]
    assert len(ours) > 10
    for task in ours:
        assert not task.time_limit or task.soft_time_limit, f"{task.name}: a hard limit of its own, no soft one"
        soft, hard = task.soft_time_limit or conf.task_soft_time_limit, task.time_limit or conf.task_time_limit
        assert soft < hard, task.name
    longest = max(task.time_limit or conf.task_time_limit for task in ours)
    assert conf.broker_transport_options["visibility_timeout"] >= 2 * longest


@pytest.fixture
def worker(transactional_db):
    """A real Celery worker on a queue of this test's own, against the test database and Redis."""
    with celery_worker(broker_url=celery_app.conf.broker_url, result_backend=celery_app.conf.result_backend) as queue:
        yield queue


@pytest.mark.integration
def test_a_real_worker_runs_a_task_to_completion(worker):
    Session.objects.create(session_key="old", session_data="x", expire_date=timezone.now() - timedelta(days=1))
    Session.objects.create(session_key="live", session_data="x", expire_date=timezone.now() + timedelta(days=1))
    result = clear_expired_sessions.apply_async(queue=worker)
    assert result.get(timeout=60) == 1
    assert list(Session.objects.values_list("session_key", flat=True)) == ["live"]


@pytest.mark.django_db
def test_setup_periodic_tasks_is_idempotent_and_keeps_paused_jobs_paused(capsys):
    call_command("setup_periodic_tasks")
    assert set(PeriodicTask.objects.values_list("name", flat=True)) >= set(SCHEDULE)
    job = PeriodicTask.objects.get(name="platform.clear_expired_sessions")
    assert (job.crontab.hour, job.crontab.minute, job.expire_seconds, job.queue) == ("3", "17", 3600, "bulk")
    PeriodicTask.objects.filter(pk=job.pk).update(enabled=False)  # paused in the admin
    call_command("setup_periodic_tasks")
    out = capsys.readouterr().out
    assert "unchanged  platform.clear_expired_sessions" in out
    assert PeriodicTask.objects.get(pk=job.pk).enabled is False
    assert PeriodicTask.objects.filter(name__in=list(SCHEDULE)).count() == len(SCHEDULE)


@pytest.mark.django_db
def test_setup_periodic_tasks_updates_changed_and_drops_undeclared_managed_jobs(system_actor):
    from django_celery_beat.models import IntervalSchedule

    from crm_platform.services import periodic_tasks_sync

    periodic_tasks_sync(actor=system_actor)
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="hand-made", task="x.y", interval=every_minute)
    sessions = SCHEDULE["platform.clear_expired_sessions"]
    changed = {
        "platform.clear_expired_sessions": {**sessions, "crontab": {"minute": "0", "hour": "4"}},
        "platform.probe": {"task": "crm_platform.tasks.clear_expired_sessions", "every": 30, "expires": 20},
    }
    report = periodic_tasks_sync(actor=system_actor, schedule=changed)
    assert (report["created"], report["updated"]) == (["platform.probe"], ["platform.clear_expired_sessions"])
    assert PeriodicTask.objects.get(name="platform.clear_expired_sessions").crontab.hour == "4"
    del changed["platform.probe"]
    assert periodic_tasks_sync(actor=system_actor, schedule=changed)["deleted"] == ["platform.probe"]
    assert PeriodicTask.objects.filter(name="hand-made").exists()


def test_every_scheduled_task_exists_and_has_an_expiry():
    celery_app.loader.import_default_modules()  # what a worker does at start: every app's tasks
    for name, spec in SCHEDULE.items():
        assert spec["task"] in celery_app.tasks, name
        assert spec.get("expires"), name
        assert spec["queue"] in {"default", "sync", "messaging", "ai", "bulk"}


@pytest.mark.integration
def test_a_task_sent_to_one_queue_is_not_delivered_to_another():
    """Each named queue has its own routing key; a task for `bulk` must not land in `default`."""
    assert celery_app.conf.broker_url == settings.REDIS_URL  # this test worker's own Redis database
    with celery_app.connection_for_write() as conn:
        clear_expired_sessions.apply_async(queue="bulk", connection=conn)
        redis = conn.default_channel.client
        assert (redis.llen("bulk"), redis.llen("default")) == (1, 0)


@pytest.mark.parametrize(
    "code",
    [
        "import crm_platform.wsgi",
        "import django; django.setup(); from celery import signals; from crm_platform.celery import app; "
        "signals.worker_ready.send(sender=None)",
        "import django; django.setup(); from celery import signals; from crm_platform.celery import app; "
        "signals.worker_process_init.send(sender=None)",
    ],
    ids=["web", "solo worker", "prefork child"],
)
def test_web_and_worker_processes_freeze_what_startup_loaded(code):
    """Full collections skip the objects loading Django made (see crm_platform/wsgi.py)."""
    import subprocess
    import sys

    script = f"import gc; {code}; import sys; print(gc.get_freeze_count(), 'integrations.inbound_apis' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    frozen, views_loaded = done.stdout.split()[-2:]
    assert int(frozen) > 50_000
    if code == "import crm_platform.wsgi":
        assert views_loaded == "True"  # the URLconf and its views were loaded before the freeze
