"""Views for the tests of issue 8: streaming writers, raw writes, header tokens."""
import io
import json
import secrets

from asgiref.sync import sync_to_async
from django.contrib.auth import authenticate
from django.db import connections
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from .models import ApiToken, Item


def _write(pk, value):
    Item.objects.update_or_create(pk=pk, defaults={"value": value})


@csrf_exempt
def stream_write(request, pk, value):
    _write(pk, value)
    return StreamingHttpResponse(iter([b"written"]))


@csrf_exempt
def file_write(request, pk, value):
    _write(pk, value)
    return FileResponse(io.BytesIO(b"written"), filename="w.txt")


async def async_stream_write(request, pk, value):
    await sync_to_async(_write)(pk, value)

    async def body():
        yield b"written"
    return StreamingHttpResponse(body())


@csrf_exempt
def raw_write(request, pk, value):
    """A write the router is not asked about: raw SQL on the leader."""
    with connections["default"].cursor() as cur:
        cur.execute("UPDATE shop_item SET value = %s WHERE id = %s", [value, pk])
    return JsonResponse({"written": value})


@csrf_exempt
def raw_write_then_lose_connection(request, pk, value):
    with connections["default"].cursor() as cur:
        cur.execute("UPDATE shop_item SET value = %s WHERE id = %s", [value, pk])
    connections["default"].connection.close()  # under Django: it does not know
    return JsonResponse({"written": value})


async def async_stream_read(request, pk):
    """The body reads after the view returned."""
    async def body():
        item = await sync_to_async(Item.objects.get)(pk=pk)
        yield json.dumps({"value": item.value, "db": item._state.db}).encode()
    return StreamingHttpResponse(body())


@csrf_exempt
def api_login(request):
    """Issue a header token (as DRF's obtain_auth_token does)."""
    body = json.loads(request.body)
    user = authenticate(request, username=body["username"], password=body["password"])
    if user is None:
        return HttpResponse(status=403)
    token = ApiToken.objects.create(key=secrets.token_hex(20), user=user)
    header = "Token " + token.key
    try:
        from readyourwrites import record_under
    except ImportError:  # the code before issue 8 had no way to say it
        pass
    else:
        record_under(header)
    return JsonResponse({"token": token.key})


def api_whoami(request):
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.startswith("Token "):
        return HttpResponse(status=401)
    try:
        token = ApiToken.objects.select_related("user").get(key=header[6:])
    except ApiToken.DoesNotExist:
        return HttpResponse(status=401)
    return JsonResponse({"user": token.user.username, "db": token._state.db})


# A test's gates: write_then_hold writes, says so, and answers only when
# the test opens its gate (two requests of one browser, finishing in the
# order the test chooses).
GATES = {}


@csrf_exempt
def write_then_hold(request, pk, value, gate):
    _write(pk, value)
    written, release = GATES[gate]
    written.set()
    if not release.wait(60):
        return HttpResponse("the test never released the gate", status=500)
    return JsonResponse({"written": value})


@csrf_exempt
def write_and_enqueue(request, pk, value):
    """Write, then enqueue three tasks (Django's task framework) that read
    what was written."""
    from .tasks import read_item

    if not request.session.session_key:
        request.session.save()
    _write(pk, value)
    return JsonResponse({"results": [read_item.enqueue(pk).id for _ in range(3)]})
