"""A task of the test site for Django's task framework (Django 6.0+):
it reads an item and says which database served it."""
from django.db import connections

from readyourwrites.tasks import task

from .models import Item


@task
def read_item(pk):
    from readyourwrites.router import reads_moved_to_leader

    try:
        moved = reads_moved_to_leader()
        item = Item.objects.get(pk=pk)
        return [item.value, "default" if reads_moved_to_leader() > moved else item._state.db]
    finally:
        connections.close_all()
