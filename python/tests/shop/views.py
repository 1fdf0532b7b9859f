"""Views of the test site: each read reports which database served it."""
import json

from asgiref.sync import sync_to_async
from django.contrib.auth import authenticate, login
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Item


def _read(pk):
    from readyourwrites.router import reads_moved_to_leader

    moved = reads_moved_to_leader()
    item = Item.objects.get(pk=pk)
    # a read routed to a follower may have been served by the leader
    # (its wait timed out): the instance still names the follower
    return {"value": item.value, "db": "default" if reads_moved_to_leader() > moved else item._state.db}


def item_naive(request, pk, alias):
    """A read sent to a follower without asking the router: the control."""
    item = Item.objects.using(alias).get(pk=pk)
    return JsonResponse({"value": item.value, "db": alias})


@csrf_exempt
def item(request, pk):
    if request.method == "POST":
        if not request.session.session_key:
            request.session.save()
        value = int(json.loads(request.body)["value"])
        Item.objects.update_or_create(pk=pk, defaults={"value": value})
        return JsonResponse({"written": value})
    return JsonResponse(_read(pk))


async def item_async(request, pk):
    return JsonResponse(await sync_to_async(_read)(pk))


@csrf_exempt
def login_view(request):
    user = authenticate(request, username=request.POST["username"], password=request.POST["password"])
    if user is None:
        return HttpResponse(status=403)
    login(request, user)
    return JsonResponse({"logged_in": user.username})


def whoami(request):
    return JsonResponse({"user": request.user.username if request.user.is_authenticated else None})


def touch_session(request):
    request.session["touched"] = True
    return JsonResponse({"session": True})
