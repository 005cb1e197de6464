from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import TemplateView


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    # Resolved per request, not at import: a manifest storage may not have its manifest yet.
    return HttpResponseRedirect(static("streamchat/favicon.svg"))


urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    # Pages that name no icon (admin's) make browsers ask for /favicon.ico: answer with ours.
    path("favicon.ico", favicon),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("chat/", include("streamchat.urls")),
]
