"""/reports/recommendations/ — the savings report page (staff login)."""

from django.urls import path

from recommendations import views

app_name = "recommendations"

urlpatterns = [
    path("", views.recommendations_report, name="report"),
]
