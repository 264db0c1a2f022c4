"""/reports/ — the server-rendered report pages (staff login)."""

from django.urls import path

from budgets import views

app_name = "reports"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("<slug:organization>/projects/<slug:project>/", views.project_report, name="project"),
    path("<slug:organization>/projects/<slug:project>/sprints/<slug:sprint>/", views.sprint_report, name="sprint"),
    path("<slug:organization>/projects/<slug:project>/agents/<str:agent>/", views.agent_report, name="agent"),
]
