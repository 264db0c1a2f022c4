from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

# The budget check (budgets.api.urls, first) is the hot path: URL resolution tries patterns in order.
api_v1 = [
    path("", include("budgets.api.urls")),
    path("", include("costs.api.urls")),
    path("", include("pricing.api.urls")),
    path("", include("budgets.api.report_urls")),
    path("", include("recommendations.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI from drf-spectacular-sidecar's static files (no CDN).
    path("docs/", SpectacularSwaggerView.as_view(url_name="v1:schema"), name="docs"),
]

urlpatterns = [
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    path("admin/", admin.site.urls),
    path("reports/recommendations/", include("recommendations.urls")),
    path("reports/", include("budgets.urls")),
]
