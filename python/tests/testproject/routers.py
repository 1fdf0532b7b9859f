"""The task queue's own database alias (django-tasks-db's models), as a site
keeps its queue apart: the worker's claims and results are not writes of
the router's leader connection.  RYW_TASK_QUEUE_ALIAS=default (read at each
call: a test sets it, and the worker process it starts inherits it) keeps the
queue on the router's leader alias instead, django-tasks-db's default."""
import os


class TaskQueueRouter:
    def _ours(self, model):
        return model.__module__.startswith("django_tasks_db.")

    def _alias(self, model):
        return os.environ.get("RYW_TASK_QUEUE_ALIAS", "tasks") if self._ours(model) else None

    def db_for_read(self, model, **hints):
        return self._alias(model)

    def db_for_write(self, model, **hints):
        return self._alias(model)

    def allow_migrate(self, db, app_label, **hints):
        return None
