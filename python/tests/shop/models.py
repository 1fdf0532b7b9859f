from django.db import models


class Item(models.Model):
    value = models.IntegerField(default=0)
    note = models.TextField(default="")


class ApiToken(models.Model):
    """A header token for API clients (a minimal TokenAuthentication)."""

    key = models.CharField(max_length=40, unique=True)
    user = models.ForeignKey("auth.User", on_delete=models.CASCADE)
