"""The task queue's own database alias (django-tasks-db's models), as a site
keeps its queue apart: the worker's claims and results are not writes of
the router's leader connection."""


class TaskQueueRouter:
    def _ours(self, model):
        return model.__module__.startswith("django_tasks_db.")

    def db_for_read(self, model, **hints):
        return "tasks" if self._ours(model) else None

    def db_for_write(self, model, **hints):
        return "tasks" if self._ours(model) else None

    def allow_migrate(self, db, app_label, **hints):
        return None
