from django.urls import path

from shop import views

urlpatterns = [
    path("items/<int:pk>/", views.item),
    path("async/items/<int:pk>/", views.item_async),
    path("naive/<str:alias>/items/<int:pk>/", views.item_naive),
    path("login/", views.login_view),
    path("whoami/", views.whoami),
    path("touch-session/", views.touch_session),
]
