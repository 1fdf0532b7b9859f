from django.apps import AppConfig


class ReadYourWritesConfig(AppConfig):
    name = "readyourwrites"
    verbose_name = "Read your writes"

    def ready(self) -> None:
        from . import checks, router  # noqa: F401  (registers checks and signal receivers)

        try:
            from . import celery  # noqa: F401
        except ImportError:
            pass
