from django.db import models


class Item(models.Model):
    value = models.IntegerField(default=0)
    note = models.TextField(default="")
