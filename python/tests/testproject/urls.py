from django.urls import path

from shop import views, views_holes

urlpatterns = [
    path("items/<int:pk>/", views.item),
    path("async/items/<int:pk>/", views.item_async),
    path("naive/<str:alias>/items/<int:pk>/", views.item_naive),
    path("login/", views.login_view),
    path("whoami/", views.whoami),
    path("touch-session/", views.touch_session),
    path("holes/stream-write/<int:pk>/<int:value>/", views_holes.stream_write),
    path("holes/file-write/<int:pk>/<int:value>/", views_holes.file_write),
    path("holes/async-stream-write/<int:pk>/<int:value>/", views_holes.async_stream_write),
    path("holes/raw-write/<int:pk>/<int:value>/", views_holes.raw_write),
    path("holes/raw-write-lose/<int:pk>/<int:value>/", views_holes.raw_write_then_lose_connection),
    path("holes/async-stream-read/<int:pk>/", views_holes.async_stream_read),
    path("holes/write-then-hold/<int:pk>/<int:value>/<str:gate>/", views_holes.write_then_hold),
    path("holes/write-and-enqueue/<int:pk>/<int:value>/", views_holes.write_and_enqueue),
    path("api/login/", views_holes.api_login),
    path("api/whoami/", views_holes.api_whoami),
]
