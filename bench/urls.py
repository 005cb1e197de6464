"""The demo's URLs plus ``bench/stats/``: the database counters of ``bench.dbstats``."""

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from . import dbstats


def stats(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dbstats.snapshot())


urlpatterns = [
    path("bench/stats/", stats),
    path("", include("orchat_site.urls")),
]
